"""How Go prints values, in the one place Ollama's output formats depend on it.

``fmt.Sprint`` (templates' ``{{ .X }}`` and ``print``, /api/show's ``parameters``), ``strconv.Quote``
(``%q``, ``%#v``) and ``encoding/json`` (manifests, params blobs, ``Tools.String()`` and the template
``json`` function) each differ from Python's defaults in small ways (``1e+06``, ``\\u003c``), and
tools compare our text with Ollama's byte for byte. The template engine, the store and the options
all format through these functions, so they cannot disagree.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v", "\\": "\\\\", '"': '\\"'}
#: what Go's encoding/json escapes beyond JSON's minimum (HTML-safe output, and JavaScript line separators)
_JSON_HTML_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def _shortest(value: float) -> tuple[str, int]:
    """The shortest round-tripping digits of ``abs(value)`` (strconv's shortest mode, which ``repr``
    also is) and the decimal point's position relative to them."""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    return digits, int(exponent) + len(digits)


def _fixed(digits: str, point: int) -> str:
    if point <= 0:
        return f"0.{'0' * -point}{digits}"
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return f"{digits[:point]}.{digits[point:]}"


def _exponent(digits: str, point: int) -> str:
    exp = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"


def go_float(value: float) -> str:
    """``fmt.Sprint(float64)``: shortest digits, exponent form when the exponent is < -4 or >= 6
    (``1e+06``, ``1.2345675e+06``, ``1.5e-05``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    digits, point = _shortest(value)
    exp = point - 1
    if exp < -4 or exp >= 6:
        return sign + _exponent(digits, point)
    return sign + _fixed(digits, point)


def go_json_float(value: float) -> str:
    """A float as ``encoding/json`` writes it: fixed notation unless below 1e-6 or from 1e21 on, and
    then ``1e-7`` rather than ``1e-07``."""
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"json: unsupported value: {go_float(value)}")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    digits, point = _shortest(value)
    if 1e-6 <= abs(value) < 1e21:
        return sign + _fixed(digits, point)
    text = _exponent(digits, point)
    if text[-4:-1] == "e-0":
        text = text[:-2] + text[-1]
    return sign + text


def go_quote(text: str) -> str:
    """``strconv.Quote``: Go escapes (``\\x1b``, ``\\u200b``) where JSON would write ``\\u001b``."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def go_json(value: Any) -> str:
    """``json.Marshal(v)``: compact, keys in the mapping's order (sort them first for a Go map),
    ``<>&`` escaped as ``\\u003c``..., floats as Go writes them."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return go_json_float(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        for char, escaped in _JSON_HTML_ESCAPES:
            text = text.replace(char, escaped)
        return text
    if isinstance(value, dict):
        return "{" + ",".join(f"{go_json(str(k))}:{go_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    raise TypeError(f"json: unsupported type {type(value).__name__}")


def go_sprint(value: Any) -> str:
    """``fmt.Sprint(v)`` for the values templates hold: ``<nil>``, ``true``, ``1e+06``, ``[a b]``,
    ``map[k:v]`` with sorted keys. (A template prints a nil action as ``<no value>`` instead.)"""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_sprint(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{go_sprint(k)}:{go_sprint(value[k])}" for k in sorted(value)) + "]"
    return str(value)


__all__ = ["go_float", "go_json", "go_json_float", "go_quote", "go_sprint"]
