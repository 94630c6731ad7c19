"""A create request (structured fields, a parsed Modelfile or Modelfile text), normalised into the
one form the store builds a model from, with the rules on what may name a file.

Ollama's create handler takes the same fields (``from``, ``files``, ``adapters``, ...); a legacy
``modelfile``/``path`` is parsed first and the structured fields sent beside it override it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidRequest
from ..options import check_options
from ..types import CreateRequest
from .modelfile import Modelfile, create_fields
from .modelfile import parse as parse_modelfile
from .quantize import parse_quant_type


@dataclass
class CreateSpec:
    """What a create asks for, whichever form it came in: the FROM, files and adapters to resolve,
    and the text layers and parameters to write."""

    from_: str | None = None
    files: dict[str, str] | None = None
    adapters: list[str] = field(default_factory=list)
    template: str | None = None
    system: str | None = None
    licenses: list[str] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, str]] = field(default_factory=list)
    #: the type to quantize the model's weights to (``parse_quant_type``'s name), or None
    quantize: str | None = None


def to_spec(request: CreateRequest | Modelfile | str, *, trusted: bool, base_dir: Path | None) -> CreateSpec:
    """The request's one form; ``path`` (a Modelfile on this machine) only for ``trusted`` callers."""
    if isinstance(request, str):
        request = parse_modelfile(request)
    if isinstance(request, Modelfile):
        request = CreateRequest(**create_fields(request))
    spec = CreateSpec()
    if request.quantize or request.quantization:
        spec.quantize = parse_quant_type(request.quantize or request.quantization or "")
    if request.modelfile is not None or request.path is not None:
        if request.modelfile is None:
            if not trusted:
                raise InvalidRequest("'path' is not accepted over HTTP: send the Modelfile text as 'modelfile'")
            text = Path(request.path).expanduser().read_text("utf-8")  # type: ignore[arg-type]
        else:
            text = request.modelfile
        apply_structured(spec, CreateRequest(**create_fields(parse_modelfile(text))))
    # fields sent beside a legacy modelfile override it, as the seed document describes
    apply_structured(spec, request)
    return spec


def apply_structured(spec: CreateSpec, request: CreateRequest) -> None:
    if request.from_:
        spec.from_ = request.from_
    if request.files:
        spec.files = dict(request.files)
    if request.adapters:
        spec.adapters = list(request.adapters.values())
    if request.template is not None:
        spec.template = request.template
    if request.system is not None:
        spec.system = request.system
    if request.license is not None:
        spec.licenses = [request.license] if isinstance(request.license, str) else list(request.license)
    if request.parameters:
        spec.parameters.update(check_options(request.parameters, strict=True))
    if request.messages:
        spec.messages = [{"role": m.role, "content": m.content} for m in request.messages]


def is_file_ref(value: str, trusted: bool, base_dir: Path | None) -> bool:
    """Whether a FROM names a file (a digest, a path, a .gguf) rather than an installed model; for a
    ``trusted`` caller, also a relative name that exists on disk."""
    ref = value.strip().removeprefix("@")
    if ref.startswith(("sha256:", "sha256-", "/", "./", "../", "~")) or ref.lower().endswith(".gguf"):
        return True
    if trusted:
        candidate = (base_dir / ref) if base_dir is not None else Path(ref)
        return candidate.exists()
    return False


__all__ = ["CreateSpec", "apply_structured", "is_file_ref", "to_spec"]
