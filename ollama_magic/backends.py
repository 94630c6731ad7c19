"""One interface for the notebook front ends, whether the models run in this kernel or on a server.

``Backend`` is the shape of the official ``ollama.Client`` (which ``Engine`` already has) plus
``load``/``unload``. The in-kernel backend is the ``Engine`` itself; ``RemoteBackend`` puts any
Ollama-compatible server (real Ollama, or ``ollama-magic serve`` on a bigger machine) behind the same
calls and turns the client's errors into ours, so the magics and widgets never care which one they have.
``OpenAIBackend`` (openai_backend.py) does the same for servers that speak OpenAI's /v1 instead;
``connect`` finds out which one a URL needs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import httpx
import ollama

from . import envconfig
from .errors import (CANNOT_RERANK, CANNOT_SCORE_LABELS, InvalidRequest, ModelNotFound, NotFound, NotSupported, OllamaMagicError,
                     RemoteError)
from .types import (ChatResponse, ClassifyResponse, ContextFit, DetokenizeResponse, RerankResponse, RunningModels,
                    TokenizeResponse)


@runtime_checkable
class Backend(Protocol):
    """What the magics and widgets call. Streaming calls return iterators with ``close()``: closing
    one stops the generation (in-kernel at once; remote by dropping the connection)."""

    def list(self) -> Any: ...
    def show(self, model: str) -> Any: ...
    def create(self, model: str, *, stream: bool = False, **fields: Any) -> Any: ...
    def copy(self, source: str, destination: str) -> Any: ...
    def delete(self, model: str) -> Any: ...
    def pull(self, model: str, *, insecure: bool = False, stream: bool = False) -> Any: ...
    def push(self, model: str, *, insecure: bool = False, stream: bool = False) -> Any: ...
    def ps(self) -> Any: ...
    def load(self, model: str, keep_alive: float | str | None = None) -> Any: ...
    def unload(self, model: str) -> bool: ...
    def generate(self, model: str = "", prompt: str | None = None, **kwargs: Any) -> Any: ...
    def chat(self, model: str = "", messages: Sequence[Any] | None = None, **kwargs: Any) -> Any: ...
    def embed(self, model: str = "", input: str | Sequence[str] = "", **kwargs: Any) -> Any: ...
    def tokenize(self, model: str, content: str) -> Any: ...
    def detokenize(self, model: str, tokens: Sequence[int]) -> Any: ...
    def classify(self, model: str = "", prompt: str | None = None, *, choices: Sequence[str],
                 **kwargs: Any) -> ClassifyResponse:
        """Each of ``choices``' probability as the reply (``Engine.classify``); NotSupported where the
        server cannot say (``CANNOT_SCORE_LABELS``)."""
        ...
    def rerank(self, model: str, query: str, documents: Sequence[str], *, top_n: int | None = None,
               **kwargs: Any) -> RerankResponse:
        """``documents`` by relevance to ``query`` (``Engine.rerank``); NotSupported where the server
        cannot rank (``CANNOT_RERANK``)."""
        ...
    def fit_context(self, model: str, messages: Sequence[Any], **kwargs: Any) -> ContextFit | None:
        """What a chat with these messages would leave out to fit the context, by the server's own
        rule and tokenizer; None when the server cannot say (the caller then estimates)."""
        ...


def base_url(url: str, default_port: int = 11434) -> str:
    """``gpu-box`` -> ``http://gpu-box:11434``: a scheme and Ollama's port where the URL has none, as
    Ollama's clients read OLLAMA_HOST; a URL with a scheme is taken as written."""
    url = url.strip().rstrip("/")
    if "://" in url:
        return url
    parsed = httpx.URL(f"http://{url}")
    return str(parsed.copy_with(port=parsed.port or default_port)).rstrip("/")


def api_key(env_var: str | None) -> str | None:
    """The key from ``env_var`` (never from the command line, which notebooks save), else
    OLLAMA_MAGIC_API_KEY; a named variable that is unset is an error, not a silent anonymous call."""
    if env_var is None:
        return envconfig.api_key() or None
    if not os.environ.get(env_var):
        raise InvalidRequest(f"the environment variable {env_var} (--api-key-env) is not set")
    return os.environ[env_var]


def detect_api(url: str, key: str | None = None, timeout: float = 10.0) -> str:
    """``"ollama"`` when ``/api/version`` answers (Ollama's API is the richer one, so it wins on servers
    that speak both, like ours), ``"openai"`` when ``/v1/models`` does (or refuses the key)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    root = url[: -len("/v1")] if url.endswith("/v1") else url
    try:
        if root == url:
            resp = httpx.get(f"{root}/api/version", headers=headers, timeout=timeout)
            if resp.status_code == 200 and "version" in _json(resp):
                return "ollama"
        resp = httpx.get(f"{root}/v1/models", headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise RemoteError(f"no server answers at {url}: {exc}") from None
    if resp.status_code in (401, 403) or (resp.status_code == 200 and "data" in _json(resp)):
        return "openai"
    raise RemoteError(f"no Ollama- or OpenAI-compatible server answers at {url} "
                      f"(/api/version and /v1/models: {resp.status_code})")


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        value = resp.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def connect(url: str, *, api: str = "auto", api_key_env: str | None = None) -> tuple[Any, str]:
    """(the backend for the server at ``url``, a one-line description of it). ``api`` is ``"ollama"``,
    ``"openai"`` or ``"auto"`` (ask the server). Raises RemoteError when no such server answers."""
    if api not in ("auto", "ollama", "openai"):
        raise InvalidRequest(f"unknown API {api!r}: use ollama, openai or auto")
    key = api_key(api_key_env)
    url = base_url(url)
    if api == "auto":
        api = detect_api(url, key)
    if api == "ollama":
        backend: Any = RemoteBackend(url, api_key=key)
    else:
        from .openai_backend import OpenAIBackend

        backend = OpenAIBackend(url if url.endswith("/v1") else f"{url}/v1", api_key=key)
    return backend, backend.check()


def _translate(exc: Exception, host: str) -> OllamaMagicError:
    if isinstance(exc, ollama.ResponseError):
        message = exc.error or str(exc)
        if exc.status_code == 404:
            if message.startswith('model "') and message.endswith('" not found'):
                return ModelNotFound(message[len('model "'):-len('" not found')])
            error: OllamaMagicError = NotFound(message)
        elif exc.status_code == 400:
            error = InvalidRequest(message)
        else:
            error = RemoteError(f"{host} answered {exc.status_code}: {message}")
        error.status_code = exc.status_code
        return error
    return RemoteError(f"cannot reach the server at {host}: {exc}")


class _RemoteStream:
    """A remote stream with the in-kernel stream's ``close()``/``cancel()`` and our error types."""

    def __init__(self, chunks: Iterator[Any], host: str) -> None:
        self._chunks, self._host = chunks, host

    def __iter__(self) -> "_RemoteStream":
        return self

    def __next__(self) -> Any:
        try:
            return next(self._chunks)
        except (ollama.ResponseError, httpx.HTTPError, ConnectionError) as exc:
            raise _translate(exc, self._host) from None

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()  # the client's generator leaves its `with` block: the connection drops

    cancel = close


class RemoteBackend:
    """Every Backend call sent to an Ollama-compatible server with the official ``ollama`` client."""

    api = "Ollama"

    def __init__(self, host: str, *, timeout: float | None = None, headers: Mapping[str, str] | None = None,
                 api_key: str | None = None) -> None:
        self.host = base_url(host)
        key = api_key or envconfig.api_key()
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.headers.update(headers or {})
        self.timeout = timeout
        self.client = ollama.Client(host=self.host, timeout=timeout, headers=self.headers)
        self._ollama_magic: bool | None = None  # whether the server is ours (asked once, by fit_context)

    def __repr__(self) -> str:
        return f"RemoteBackend({self.host!r})"

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            result = getattr(self.client, method)(*args, **kwargs)
        except (ollama.ResponseError, httpx.HTTPError, ConnectionError) as exc:
            raise _translate(exc, self.host) from None
        if kwargs.get("stream"):
            return _RemoteStream(result, self.host)
        return result

    def check(self) -> str:
        """``version X`` of the server; raises RemoteError when nothing Ollama-like answers. (The
        ``ollama`` client has no version call, so this one request goes through httpx itself.)"""
        try:
            resp = httpx.get(f"{self.host}/api/version", headers=self.headers, timeout=self.timeout or 10.0)
            resp.raise_for_status()
            return f"version {resp.json().get('version', 'unknown')}"
        except (httpx.HTTPError, ValueError, ConnectionError) as exc:
            raise RemoteError(f"no Ollama-compatible server answers at {self.host}: {exc}") from None

    def list(self) -> Any:
        return self._call("list")

    def show(self, model: str) -> Any:
        return self._call("show", model)

    def create(self, model: str, *, stream: bool = False, **fields: Any) -> Any:
        """Local GGUF files named by ``from_`` or ``adapters`` are uploaded first (the server cannot
        read our disk). ``on_bytes`` (a local progress hook) is accepted and not used."""
        for key in ("local_paths", "on_bytes", "base_dir"):
            fields.pop(key, None)
        if fields.pop("modelfile", None):
            raise InvalidRequest("a remote server takes the current create form: from_/files/system/... "
                                 "(%ollama create -f turns a Modelfile into those fields)")
        files = dict(fields.get("files") or {})
        for name, value in files.items():
            if Path(value).expanduser().is_file():
                files[name] = self._call("create_blob", Path(value).expanduser())
        source = fields.get("from_")
        if source and Path(source).expanduser().is_file():
            path = Path(source).expanduser()
            fields["from_"] = None
            files = {path.name: self._call("create_blob", path), **files}
        if files:
            fields["files"] = files
        adapters = fields.get("adapters") or {}
        for name, value in list(adapters.items()):
            if Path(value).expanduser().is_file():
                adapters[name] = self._call("create_blob", Path(value).expanduser())
        return self._call("create", model, stream=stream, **fields)

    def pull(self, model: str, *, insecure: bool = False, stream: bool = False) -> Any:
        """The server pulls (a remote Ollama from its registry; ours through its Engine.pull)."""
        return self._call("pull", model, insecure=insecure, stream=stream)

    def push(self, model: str, *, insecure: bool = False, stream: bool = False) -> Any:
        return self._call("push", model, insecure=insecure, stream=stream)

    def copy(self, source: str, destination: str) -> Any:
        return self._call("copy", source, destination)

    def delete(self, model: str) -> Any:
        return self._call("delete", model)

    def ps(self) -> Any:
        """``client.ps()``, read into our RunningModels so GPU layers from our server are kept."""
        return self._call("_request", RunningModels, "GET", "/api/ps")

    def load(self, model: str, keep_alive: float | str | None = None) -> Any:
        return self._call("generate", model, keep_alive=keep_alive)

    def unload(self, model: str) -> bool:
        running = self.ps().models
        loaded = {m.model for m in running} | {m.name for m in running}
        self._call("generate", model, keep_alive=0)
        return bool(loaded & {model, f"{model}:latest"})

    def generate(self, model: str = "", prompt: str | None = None, **kwargs: Any) -> Any:
        return self._call("generate", model, prompt or "", **kwargs)

    def chat(self, model: str = "", messages: Sequence[Any] | None = None, **kwargs: Any) -> Any:
        if kwargs.pop("debug_render_only", False):  # not an ``ollama.Client`` argument: sent as Ollama names it
            body = {k: v for k, v in kwargs.items() if v is not None}
            body.update(model=model, messages=list(messages or []), stream=False, _debug_render_only=True)
            return ChatResponse.model_validate(self._post("/api/chat", body))
        return self._call("chat", model, messages, **kwargs)

    def embed(self, model: str = "", input: str | Sequence[str] = "", **kwargs: Any) -> Any:
        return self._call("embed", model, input, **kwargs)

    def fit_context(self, model: str, messages: Sequence[Any], **kwargs: Any) -> ContextFit | None:
        """An ollama-magic server says in its ``_debug_render_only`` answer (``_debug_info.context_fit``).
        Ollama fits too but does not say how, and one older than 0.11 would run the chat instead of
        rendering it, so it is not asked: None."""
        if self._ollama_magic is None:
            try:
                resp = httpx.get(f"{self.host}/api/version", headers=self.headers, timeout=self.timeout or 10.0)
                self._ollama_magic = "ollama_magic_version" in _json(resp)
            except httpx.HTTPError:
                self._ollama_magic = False
        if not self._ollama_magic:
            return None
        rendered = self.chat(model, messages, debug_render_only=True, **kwargs)
        return rendered.debug_info.context_fit if rendered.debug_info else None

    def tokenize(self, model: str, content: str) -> Any:
        """/api/tokenize (ollama-magic servers; Ollama has no such route)."""
        return TokenizeResponse.model_validate(self._post("/api/tokenize", {"model": model, "content": content}))

    def detokenize(self, model: str, tokens: Sequence[int]) -> Any:
        return DetokenizeResponse.model_validate(self._post("/api/detokenize", {"model": model, "tokens": list(tokens)}))

    def classify(self, model: str = "", prompt: str | None = None, *, choices: Sequence[str],
                 **kwargs: Any) -> ClassifyResponse:
        """/api/classify (ollama-magic servers; Ollama has none: NotSupported)."""
        body = {k: v for k, v in kwargs.items() if v is not None}
        body.update(model=model, choices=list(choices))
        if prompt is not None:
            body["prompt"] = prompt
        return ClassifyResponse.model_validate(
            self._post_ours("/api/classify", body, CANNOT_SCORE_LABELS.format(host=self.host)))

    def rerank(self, model: str, query: str, documents: Sequence[str], *, top_n: int | None = None,
               **kwargs: Any) -> RerankResponse:
        """/api/rerank (ollama-magic servers). Ollama has none and answers 404: NotSupported."""
        body = {k: v for k, v in kwargs.items() if v is not None}
        body.update(model=model, query=query, documents=list(documents))
        if top_n is not None:
            body["top_n"] = top_n
        return RerankResponse.model_validate(
            self._post_ours("/api/rerank", body, CANNOT_RERANK.format(host=self.host, route="/api/rerank")))

    def _post_ours(self, path: str, body: Mapping[str, Any], unsupported: str) -> Any:
        """A route only ollama-magic servers have: Ollama answers it 404, which is not a missing model
        but a server without the route, so NotSupported(``unsupported``)."""
        try:
            return self._post(path, body)
        except ModelNotFound:
            raise
        except NotFound:
            raise NotSupported(unsupported) from None

    def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        """A route the ``ollama`` client has no method for; errors become ours as for any call."""
        try:
            resp = self.client._client.post(path, json=dict(body))
            if resp.status_code >= 400:
                try:
                    message = resp.json().get("error") or resp.text
                except ValueError:
                    message = resp.text
                raise ollama.ResponseError(message, resp.status_code)
            return resp.json()
        except (ollama.ResponseError, httpx.HTTPError, ConnectionError) as exc:
            raise _translate(exc, self.host) from None


__all__ = ["Backend", "NotSupported", "RemoteBackend", "RemoteError", "api_key", "base_url", "connect", "detect_api"]
