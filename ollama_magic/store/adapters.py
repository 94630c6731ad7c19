"""Whether a LoRA adapter GGUF fits its base model, decided from the two headers alone.

llama.cpp's ``llama_adapter_lora_init`` checks most of this itself and returns NULL on a mismatch, but
not all of it: a ``token_embd`` pair whose ranks differ, or a 3-D tensor, passes its checks and then
aborts the process inside ``ggml_mul_mat`` at the first decode. So every rule of
``src/llama-adapter.cpp`` is repeated here, with the ones it lacks, and an adapter is refused in one
line at create time (and again, cheaply, when the engine loads it: a store edited by hand) before
llama.cpp sees it. The rules, in llama.cpp's order:

- the keys llama.cpp reads have the types it asserts (strings, a FLOAT32 ``adapter.lora.alpha``);
- ``general.type`` is ``adapter`` and ``adapter.type`` is ``lora`` (control vectors and activated
  LoRAs, which llama-server applies only from an invocation string on, are refused);
- ``general.architecture`` is the base's;
- every tensor is a ``.lora_a``/``.lora_b`` half (``*_norm.weight`` tensors are skipped, as llama.cpp
  skips them), each pair is complete, and the weight it patches exists in the base;
- shapes, in ggml order (``ne0`` first): for a weight ``[n_in, n_out]``, ``lora_a`` is ``[n_in, r]``
  and ``lora_b`` is ``[r, n_out]``; for ``token_embd`` (``[n_embd, n_vocab]``, looked up rather than
  multiplied) ``lora_a`` is ``[r, n_vocab]`` and ``lora_b`` is ``[r, n_embd]``. Both halves and the
  patched weight are 2-D;
- no ``token_embd`` LoRA on a model with tied embeddings (no ``output.weight``): llama.cpp's output
  projection is then ``token_embd`` too, looked up by name, and multiplies the pair in the matrix
  orientation, which aborts in ``ggml_mul_mat`` (measured on SmolLM2 with raw llama-cpp-python);
- the halves are stored as F32, F16, BF16 or Q8_0 (what ``convert_lora_to_gguf.py`` writes).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import gguf

from ..errors import InvalidRequest
from .gguf_meta import GGUFInfo, TensorInfo, gguf_header

_Q = gguf.GGMLQuantizationType
#: the types a LoRA half may have (convert_lora_to_gguf.py's outtypes; each multiplies on every backend)
LORA_TYPES = {int(_Q.F32), int(_Q.F16), int(_Q.BF16), int(_Q.Q8_0)}
_HALVES = (".lora_a", ".lora_b")
#: keys llama.cpp's adapter loader reads with ``gguf_get_val_str``/``_f32``, which abort on another type
_KEY_TYPES = {"general.type": gguf.GGUFValueType.STRING, "general.architecture": gguf.GGUFValueType.STRING,
              gguf.Keys.Adapter.TYPE: gguf.GGUFValueType.STRING,
              gguf.Keys.Adapter.LORA_ALPHA: gguf.GGUFValueType.FLOAT32}


def _fail(name: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"adapter {name} does not fit its base model: {why}")


def _pairs(info: GGUFInfo, name: str) -> dict[str, dict[str, TensorInfo]]:
    """The adapter's tensors as {patched weight: {".lora_a": a, ".lora_b": b}}."""
    pairs: dict[str, dict[str, TensorInfo]] = {}
    for tensor in info.tensors:
        half = next((h for h in _HALVES if tensor.name.endswith(h)), None)
        if half is None:
            if tensor.name.endswith("_norm.weight"):
                continue  # llama.cpp skips these (norm vectors are not applied)
            raise _fail(name, f"tensor {tensor.name!r} is neither a .lora_a nor a .lora_b half")
        pair = pairs.setdefault(tensor.name[: -len(half)], {})
        if half in pair:
            raise _fail(name, f"tensor {tensor.name!r} appears twice")
        pair[half] = tensor
    return pairs


def _check_pair(weight: str, a: TensorInfo, b: TensorInfo, base: TensorInfo, name: str) -> None:
    for half in (a, b):
        if half.ggml_type not in LORA_TYPES:
            kind = _Q(half.ggml_type).name if half.ggml_type in _Q._value2member_map_ else str(half.ggml_type)
            raise _fail(name, f"{half.name} is stored as {kind}; a LoRA half must be F32, F16, BF16 or Q8_0")
        if len(half.shape) != 2 or min(half.shape) < 1:
            raise _fail(name, f"{half.name} has shape {list(half.shape)}; a LoRA half is 2-D")
        if half.ggml_type == _Q.Q8_0 and half.shape[0] % gguf.GGML_QUANT_SIZES[_Q.Q8_0][0]:
            raise _fail(name, f"{half.name} is Q8_0 with rows of {half.shape[0]}, not a whole number of blocks")
    if len(base.shape) != 2:
        raise _fail(name, f"it patches {weight} of shape {list(base.shape)}; only 2-D weights can take a LoRA")
    n_in, n_out = base.shape
    if weight.endswith("token_embd.weight"):  # looked up, not multiplied: A and B swap roles (llm_build_inp_embd)
        rank = a.shape[0]
        want_a, want_b = (rank, n_out), (rank, n_in)
    else:  # the rank is lora_a's (its second dimension), the one llama.cpp divides alpha by is lora_b's first
        rank = a.shape[1]
        want_a, want_b = (n_in, rank), (rank, n_out)
    if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
        raise _fail(name, f"{weight} is {list(base.shape)} in the base but its LoRA halves are "
                          f"{list(a.shape)} and {list(b.shape)} (expected {list(want_a)} and {list(want_b)})")


def check_adapter(base: GGUFInfo, adapter: GGUFInfo, name: str = "") -> None:
    """Refuse (InvalidRequest, one line) an adapter that llama.cpp would refuse or abort on with
    ``base``; ``name`` says which file in the message."""
    name = name or "file"
    for key, wanted in _KEY_TYPES.items():  # llama.cpp reads these with an assert on their type
        vtype = adapter.value_types.get(key)
        if vtype is not None and vtype != wanted:
            raise _fail(name, f"its {key} is stored as {gguf.GGUFValueType(vtype).name}, not {wanted.name}")
    kind = str(adapter.metadata.get("general.type", ""))
    if kind != "adapter":
        raise _fail(name, f"its general.type is {kind or 'missing'!r}, not 'adapter' (is it a model?)")
    adapter_type = str(adapter.metadata.get(gguf.Keys.Adapter.TYPE, ""))
    if adapter_type != "lora":
        raise InvalidRequest(f"adapter {name} is a {adapter_type or 'untyped'!r} adapter: only LoRA adapters "
                             "(adapter.type 'lora') are supported")
    if gguf.Keys.Adapter.ALORA_INVOCATION_TOKENS in adapter.metadata or \
            gguf.Keys.Adapter.ALORA_INVOCATION_TOKENS in adapter.array_lengths:
        raise InvalidRequest(f"adapter {name} is an activated LoRA (aLoRA): only plain LoRA adapters are supported")
    alpha = adapter.metadata.get(gguf.Keys.Adapter.LORA_ALPHA, 0.0)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha):
        raise _fail(name, f"its adapter.lora.alpha is {alpha!r}, not a finite number")
    if adapter.architecture != base.architecture:
        raise _fail(name, f"it is for architecture {adapter.architecture!r}, the base is {base.architecture!r}")
    weights = {t.name: t for t in base.tensors}
    pairs = _pairs(adapter, name)
    if not pairs:
        raise _fail(name, "it holds no LoRA tensors")
    for weight, pair in pairs.items():
        missing = [h for h in _HALVES if h not in pair]
        if missing:
            raise _fail(name, f"{weight} has no {missing[0]} half")
        if weight not in weights:
            raise _fail(name, f"it patches {weight}, which the base model does not have")
        if weight == "token_embd.weight" and "output.weight" not in weights:
            raise _fail(name, "it patches token_embd.weight of a model with tied embeddings, which llama.cpp "
                              "also multiplies as the output projection with the LoRA the wrong way round "
                              "(its process aborts)")
        _check_pair(weight, pair[".lora_a"], pair[".lora_b"], weights[weight], name)


def check_adapter_files(model: Path, adapters: list[Path] | tuple[Path, ...]) -> None:
    """:func:`check_adapter` on files (headers cached per blob: cheap enough for every load)."""
    base = gguf_header(model)
    for path in adapters:
        check_adapter(base, gguf_header(Path(path)), Path(path).name)


def adapter_bytes(info: Any) -> dict[str, int]:
    """The bytes of an adapter's LoRA tensors by the base weight they patch (what llama.cpp allocates
    for it, on the device of that weight)."""
    sizes: dict[str, int] = {}
    for tensor in info.tensors:
        for half in _HALVES:
            if tensor.name.endswith(half):
                weight = tensor.name[: -len(half)]
                sizes[weight] = sizes.get(weight, 0) + tensor.nbytes
    return sizes


__all__ = ["LORA_TYPES", "adapter_bytes", "check_adapter", "check_adapter_files"]
