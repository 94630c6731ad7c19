"""One small exception hierarchy for the whole package, all in this module (as httpx's
``_exceptions``) and re-exported by the package root.

The core raises these; each front end maps them once (HTTP status codes in the server, one readable
line in the CLI and the magics), so no front end has to guess what went wrong from a message string.

    OllamaMagicError            every error we raise on purpose
    ├── InvalidRequest (400)    InvalidModelName, InvalidDigest, DigestMismatch, ModelfileError, TemplateError
    ├── NotFound (404)          ModelNotFound, BlobNotFound
    ├── Unauthorized (401)      a registry refused our credentials
    ├── NotSupported (501)      the connected server's API cannot do it
    ├── ServerBusy (503)        more requests wait for a model than OLLAMA_MAX_QUEUE allows
    ├── MissingPackage          an optional package is not installed
    ├── EngineError             llama.cpp failed at run time
    ├── ServerError             ``ollama-magic serve`` could not start
    ├── RegistryError           a registry is unreachable or answered something unusable
    ├── RemoteError             a remote server is unreachable or answered an error
    └── RowError                what a failed row of ``%%chat --over`` holds; RowInterrupted: stopped by Ctrl-C
    HelpShown                   not an error: a magic's --help was printed
"""

from __future__ import annotations


class OllamaMagicError(Exception):
    """Base class: every error we raise on purpose. ``status_code`` is the HTTP status Ollama uses."""

    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidRequest(OllamaMagicError):
    """The caller sent something we cannot accept (bad name, bad option, bad Modelfile)."""

    status_code = 400


class InvalidModelName(InvalidRequest):
    pass


class InvalidDigest(InvalidRequest):
    pass


class DigestMismatch(InvalidRequest):
    """Data whose sha256 differs from the digest it was announced with."""


class ModelfileError(InvalidRequest):
    """A Modelfile that does not parse or names an invalid parameter; the message names the line."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


class TemplateError(InvalidRequest):
    """A template that cannot be parsed or executed. Ollama answers these with 400 ``template error``."""

    def __init__(self, message: str) -> None:
        super().__init__(f"template error: {message}")


class NotFound(OllamaMagicError):
    status_code = 404


class ModelNotFound(NotFound):
    def __init__(self, name: str) -> None:
        # Ollama's own wording, which clients (and people) search for.
        super().__init__(f'model "{name}" not found')
        self.name = name


class BlobNotFound(NotFound):
    def __init__(self, digest: str) -> None:
        super().__init__(f"blob {digest} not found")
        self.digest = digest


class MissingPackage(OllamaMagicError):
    """An optional package (the embedded models, the GGUF converter) is not installed."""

    status_code = 500


class EngineError(OllamaMagicError):
    """llama.cpp failed at run time (a model that will not load, a decode error)."""

    status_code = 500


class ServerError(OllamaMagicError):
    """The HTTP server could not start (a port in use, a bad ``OLLAMA_HOST``)."""

    status_code = 500


class RemoteError(OllamaMagicError):
    """The server could not be reached, or answered with an error we have no better type for."""


class Unauthorized(OllamaMagicError):
    """A registry refused us: no credentials, or wrong ones."""

    status_code = 401


class RegistryError(OllamaMagicError):
    """A registry could not be reached, or answered with something we cannot use."""

    status_code = 500


class NotSupported(OllamaMagicError):
    """The connected server's API has no way to do what was asked (model management on OpenAI's /v1)."""

    status_code = 501


#: What the remote backends raise (as NotSupported) when asked for label probabilities: plain Ollama has no
#: /api/classify (it answers 404) and OpenAI's API has nothing like it. One line, for every such server.
CANNOT_SCORE_LABELS = ("{host} cannot score labels (it has no /api/classify): --choices needs the in-kernel engine "
                       "or an ollama-magic server")

CANNOT_RERANK = ("{host} cannot rerank (it has no {route}): rerank on the in-kernel engine, an ollama-magic "
                 "server, or a llama-server started with --reranking")


class ServerBusy(OllamaMagicError):
    """More requests are waiting for a model than ``OLLAMA_MAX_QUEUE`` allows (Ollama's 503)."""

    status_code = 503

    def __init__(self, message: str = "server busy, please try again.  maximum pending requests exceeded") -> None:
        super().__init__(message)


class RowError(OllamaMagicError):
    """What a row of ``%%chat --over`` (``notebook.over.chat_over``) that failed holds instead of an
    answer (``str(err)`` says why)."""


class RowInterrupted(RowError):
    """What a row holds when Ctrl-C stopped the column before its answer was complete."""

    def __init__(self) -> None:
        super().__init__("interrupted (Ctrl-C) before this row finished")


class HelpShown(Exception):
    """--help was printed; nothing else to do. (Not an OllamaMagicError: nothing went wrong.)"""


__all__ = [
    "BlobNotFound",
    "DigestMismatch",
    "EngineError",
    "HelpShown",
    "InvalidDigest",
    "InvalidModelName",
    "InvalidRequest",
    "MissingPackage",
    "ModelNotFound",
    "ModelfileError",
    "NotFound",
    "NotSupported",
    "OllamaMagicError",
    "RegistryError",
    "RemoteError",
    "RowError",
    "RowInterrupted",
    "ServerError",
    "ServerBusy",
    "TemplateError",
    "Unauthorized",
]
