"""The option set Ollama knows (``api.Options`` + ``api.Runner``), with its types and defaults.

One table serves the Modelfile parser (PARAMETER lines arrive as text), create requests and, later,
request ``options`` (JSON values). Keeping it in one place means a parameter is typed the same way
whichever front end it came through.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any, Mapping

from .errors import InvalidRequest
from .gofmt import go_float, go_quote

log = logging.getLogger("ollama_magic")

#: name -> (type, Ollama's default). ``list`` means a list of strings (``stop``).
OPTION_TYPES: dict[str, type] = {
    # load-time (api.Runner)
    "num_ctx": int,
    "num_batch": int,
    "num_gpu": int,
    "main_gpu": int,
    "use_mmap": bool,
    "num_thread": int,
    # sampling / generation (api.Options)
    "num_keep": int,
    "seed": int,
    "num_predict": int,
    "top_k": int,
    "top_p": float,
    "min_p": float,
    "typical_p": float,
    "repeat_last_n": int,
    "temperature": float,
    "repeat_penalty": float,
    "presence_penalty": float,
    "frequency_penalty": float,
    "stop": list,
    # LoRA adapters (beyond Ollama, as llama-server): every ADAPTER's scale; ``lora`` (REQUEST_OPTIONS) per adapter
    "lora_scale": float,
}

OPTION_DEFAULTS: dict[str, Any] = {
    "num_ctx": 4096,
    "num_batch": 512,
    "num_gpu": -1,
    "num_thread": 0,
    "num_keep": 4,
    "seed": -1,
    "num_predict": -1,
    "top_k": 40,
    "top_p": 0.9,
    "min_p": 0.0,
    "typical_p": 1.0,
    "repeat_last_n": 64,
    "temperature": 0.8,
    "repeat_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "lora_scale": 1.0,
}

#: Names old clients and Modelfiles still send. Ollama skips them with a warning; so do we.
DEPRECATED_OPTIONS = frozenset(
    {
        "penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only", "use_mlock",
        "mirostat", "mirostat_tau", "mirostat_eta", "tfs_z", "numa", "embedding_only",
    }
)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# num_predict: -1 is "no limit", -2 "until the context is full"; anything lower is a mistake
_INT_MINIMUMS = {"num_predict": -2}
#: A LoRA scale's bound either way. llama.cpp takes any float, but the adapter's update is multiplied by
#: it (times alpha / rank) on every patched layer: trained adapters are used at 0..2, and far beyond
#: that the activations leave f16's range (inf/NaN logits), which is never what a user meant.
LORA_SCALE_LIMIT = 10.0
_FLOAT_RANGES = {"lora_scale": (-LORA_SCALE_LIMIT, LORA_SCALE_LIMIT)}
#: What Go's strconv.ParseInt(s, 10, 64) / ParseFloat(s, 64) read (decimal forms), in ASCII only.
_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "a boolean (true/false)", list: "a string"}


def parse_parameter_text(name: str, text: str) -> Any:
    """Type a PARAMETER value written as text; ``stop`` gives one string (the caller collects a list).

    Raises InvalidRequest naming the parameter and the bad value.
    """
    kind = OPTION_TYPES.get(name)
    if kind is None:
        raise InvalidRequest(f"unknown parameter '{name}'")
    if kind is list:
        return text
    try:
        if kind is int:
            if not _GO_INT.fullmatch(text):  # Python's int() also takes "1_000", " 5 " and non-ASCII digits
                raise ValueError(text)
            value = int(text, 10)
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise ValueError(text)
            return value
        if kind is float:
            if not _GO_FLOAT.fullmatch(text):
                raise ValueError(text)
            value = float(text)
            if not math.isfinite(value):
                raise ValueError(text)
            return value
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(text)
    except ValueError:
        raise InvalidRequest(f"parameter '{name}' must be {_TYPE_WORDS[kind]}, got {text!r}") from None


def check_option_value(name: str, value: Any) -> Any:
    """Check a JSON-typed option value; return it normalised (ints accepted where floats are)."""
    kind = OPTION_TYPES[name]
    bad = InvalidRequest(f"option \"{name}\" must be {_TYPE_WORDS[kind]}, got {json.dumps(value)}")
    if kind is list:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise InvalidRequest(f"option \"stop\" must be a string or a list of strings, got {json.dumps(value)}")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if isinstance(value, bool):
        raise bad
    if kind is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:  # Go decodes into an int64
            if value < _INT_MINIMUMS.get(name, _INT64_MIN):
                raise InvalidRequest(f"option \"{name}\" must be at least {_INT_MINIMUMS[name]}, got {value}")
            return value
        raise bad
    if isinstance(value, (int, float)):
        try:
            if math.isfinite(float(value)):
                return _in_range(name, value)
        except OverflowError:  # an integer with hundreds of digits
            pass
    raise bad


def _in_range(name: str, value: float) -> float:
    low, high = _FLOAT_RANGES.get(name, (-math.inf, math.inf))
    if not low <= value <= high:
        raise InvalidRequest(f"option \"{name}\" must be from {go_float(low)} to {go_float(high)}, "
                             f"got {json.dumps(value)}")
    return value


def check_lora(value: Any) -> list[dict[str, Any]]:
    """llama-server's per-request ``lora`` field: ``[{"id": i, "scale": s}, ...]``, adapter ``i`` (the
    model's i-th ADAPTER, from 0) at scale ``s``; adapters not listed run at scale 0 and an empty list
    means the model's own scales (both as llama-server). Unlike llama-server, an entry without both
    fields, a repeated id or an out-of-range scale is refused rather than read as a default; ids the
    model does not have are refused where the model is known (``engine/lora.py``)."""
    shape = 'option "lora" must be a list of {"id": <adapter index>, "scale": <number>} objects'
    if not isinstance(value, list):
        raise InvalidRequest(f"{shape}, got {json.dumps(value)}")
    entries: list[dict[str, Any]] = []
    for entry in value:
        if not isinstance(entry, Mapping) or set(entry) != {"id", "scale"}:
            raise InvalidRequest(f"{shape}, got {json.dumps(entry, default=str)}")
        index, scale = entry["id"], entry["scale"]
        if isinstance(index, float) and index.is_integer():
            index = int(index)
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise InvalidRequest(f'option "lora": "id" must be an adapter index (0, 1, ...), got {json.dumps(index)}')
        if any(e["id"] == index for e in entries):
            raise InvalidRequest(f'option "lora": adapter {index} is listed twice')
        try:
            scale = float(check_option_value("lora_scale", scale))
        except InvalidRequest:
            raise InvalidRequest(f'option "lora": "scale" must be a number from {go_float(-LORA_SCALE_LIMIT)} to '
                                 f'{go_float(LORA_SCALE_LIMIT)}, got {json.dumps(scale)}') from None
        entries.append({"id": index, "scale": scale})
    return entries


#: Options a request may send that are not Modelfile parameters (structured values): name -> checker
REQUEST_OPTIONS = {"lora": check_lora}


def check_options(options: Mapping[str, Any] | None, *, strict: bool) -> dict[str, Any]:
    """Validate a whole options mapping.

    ``strict`` (create requests, Modelfiles) refuses unknown names; otherwise (inference requests)
    unknown names are dropped with a logged warning, as Ollama does. Deprecated names are always
    dropped with a warning.
    """
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidRequest("options must be a JSON object")
    checked: dict[str, Any] = {}
    for name, value in options.items():
        if name in DEPRECATED_OPTIONS:
            log.warning("option %r is deprecated and ignored", name)
            continue
        if name in REQUEST_OPTIONS and not strict:
            if value is not None:
                checked[name] = REQUEST_OPTIONS[name](value)
            continue
        if name not in OPTION_TYPES:
            if strict:
                raise InvalidRequest(f"unknown parameter '{name}'")
            log.warning("invalid option provided: %r is ignored", name)
            continue
        if value is None:
            continue
        checked[name] = check_option_value(name, value)
    return checked


def format_value(value: Any) -> str:
    """Print a value as Go's ``%v`` does for the Modelfile: ``1`` not ``1.0``, ``true`` not ``True``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    return str(value)


def format_parameters(params: Mapping[str, Any]) -> str:
    """The ``parameters`` text of /api/show: ``%-30s %#v`` per value, list values one line each."""
    lines = []
    for name in sorted(params):
        values = params[name] if isinstance(params[name], list) else [params[name]]
        for value in values:
            shown = go_quote(value) if isinstance(value, str) else format_value(value)
            lines.append(f"{name:<30} {shown}")
    return "\n".join(lines)
