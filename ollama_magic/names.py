"""Model names, parsed and checked the way Ollama does (``types/model/name.go``).

A name is ``[host/][namespace/]model[:tag]``. Every part is validated against a strict character set
before it is ever joined into a path, so no name can point outside the store's ``manifests`` tree.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from .errors import InvalidModelName

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

#: How the ``:`` before a host's port is written in the manifest's directory name (``localhost:5000``).
#: Windows forbids ``:`` in file names; there it is ``%``, the spelling Ollama's maintainers chose for
#: this (ollama/ollama#4088). Elsewhere the directory is Ollama's own ``host:port``, so a store shared
#: with Ollama stays readable by both. Read when a path is made, so a test can choose Windows's.
PORT_SEPARATOR_ON_DISK = "%" if os.name == "nt" else ":"

# Ollama allows 350 characters for a host, but each part becomes a directory name: at most 255 bytes
_HOST_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,254}")
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
_MODEL_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
_TAG_RE = _MODEL_RE
#: The whole grammar as one JSON-schema pattern, for documents such as /openapi.json (parse() is the
#: check itself and says which part is wrong).
NAME_PATTERN = (
    rf"^(?:https?://)?(?:(?:{_HOST_RE.pattern})/)?(?:(?:{_NAMESPACE_RE.pattern})/)?"
    rf"(?:{_MODEL_RE.pattern})(?::(?:{_TAG_RE.pattern}))?$"
)


@dataclass(frozen=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, text: str) -> "ModelName":
        """Parse and validate; raise InvalidModelName with the reason on anything doubtful."""
        if not isinstance(text, str) or not text:
            raise InvalidModelName("invalid model name: the name is empty")
        raw = text
        if "://" in text:  # a scheme on the host is allowed and ignored, as Ollama does
            text = text.split("://", 1)[1]
        if "@" in text:
            raise InvalidModelName(f"invalid model name {raw!r}: digests in names are not supported")
        tag = DEFAULT_TAG
        colon = text.rfind(":")
        if colon > text.rfind("/"):
            text, tag = text[:colon], text[colon + 1 :]
        parts = text.split("/")
        if len(parts) == 1:
            host, namespace, model = DEFAULT_HOST, DEFAULT_NAMESPACE, parts[0]
        elif len(parts) == 2:
            host, (namespace, model) = DEFAULT_HOST, parts
        elif len(parts) == 3:
            host, namespace, model = parts
        else:
            raise InvalidModelName(f"invalid model name {raw!r}: too many '/'-separated parts")
        for label, value, pattern in (
            ("host", host, _HOST_RE),
            ("namespace", namespace, _NAMESPACE_RE),
            ("model", model, _MODEL_RE),
            ("tag", tag, _TAG_RE),
        ):
            if not value:
                raise InvalidModelName(f"invalid model name {raw!r}: the {label} is empty")
            if not pattern.fullmatch(value):
                raise InvalidModelName(
                    f"invalid model name {raw!r}: bad {label} {value!r} "
                    "(letters, digits, '_', '-' and '.' only, starting with a letter, digit or '_')"
                )
        if host.startswith(".") or ".." in host:
            raise InvalidModelName(f"invalid model name {raw!r}: bad host {host!r}")
        return cls(host, namespace, model, tag)

    @property
    def short(self) -> str:
        """The display form Ollama prints: ``gemma3:270m``, ``ns/model:tag`` or ``host/ns/model:tag``."""
        if self.host == DEFAULT_HOST:
            if self.namespace == DEFAULT_NAMESPACE:
                return f"{self.model}:{self.tag}"
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def manifest_relpath(self) -> PurePosixPath:
        """Where the manifest lives under ``manifests/``: ``host/namespace/model/tag``, the host's
        port written as this OS allows (:data:`PORT_SEPARATOR_ON_DISK`)."""
        return PurePosixPath(host_dirname(self.host), self.namespace, self.model, self.tag)

    def __str__(self) -> str:
        return self.short


def host_dirname(host: str) -> str:
    """A host as its directory under ``manifests/`` is named: ``localhost:5000`` -> ``localhost%5000`` on Windows."""
    return host.replace(":", PORT_SEPARATOR_ON_DISK)


def host_from_dirname(dirname: str) -> str:
    """The host a directory under ``manifests/`` names, in either spelling (a store written on Windows,
    or by Ollama, is read the same on every OS)."""
    return dirname.replace("%", ":")


def normalize(text: str) -> str:
    """``gemma3`` -> ``gemma3:latest``: the short display form of a valid name."""
    return ModelName.parse(text).short
