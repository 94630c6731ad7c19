"""Go's ``fmt`` verbs that Ollama's text output goes through (``%v`` of a float, ``%#v`` of a string).

/api/show's ``parameters`` text and rendered Modelfiles are compared by tools and people against what
Ollama prints, so the few places where Python's defaults differ from Go's are spelled out here.
"""

from __future__ import annotations

import math
from decimal import Decimal

_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def go_float(value: float) -> str:
    """``fmt.Sprint(float64)``: shortest digits, exponent form when the exponent is < -4 or >= 6 (``1e+06``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    # repr gives the shortest digits that round-trip, exactly like strconv's shortest mode.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = exponent + len(digits)  # decimal point position relative to the digits
    exp = point - 1
    if exp < -4 or exp >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


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
