"""Go durations (``"5m"``, ``"1h30m"``, ``"-1s"``) and plain seconds, as Ollama reads ``keep_alive``.

One parser for a request's ``keep_alive`` and for ``OLLAMA_KEEP_ALIVE``; it imports nothing but our
exceptions, so the configuration module (``envconfig``) can use it without importing the engine.
"""

from __future__ import annotations

import math
import re
from typing import Any

from .errors import InvalidRequest

MAX_KEEP_ALIVE = (2**63 - 1) / 1e9  # Go's largest time.Duration, in seconds
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float | None:
    """Seconds from a Go duration or a number; None (forever) for a negative one. Anything else, or a
    duration Go cannot hold, is an InvalidRequest that names ``keep_alive``."""
    if isinstance(value, bool):
        raise InvalidRequest(f"invalid keep_alive {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        if re.fullmatch(r"\d+(\.\d+)?", body):
            seconds = sign * float(body)  # bare numbers: seconds (more lenient than Go, as the env var is)
        else:
            parts = _DURATION.findall(body)
            if not parts or "".join(n + u for n, u in parts) != body:
                raise InvalidRequest(f'invalid keep_alive duration "{value}" (use e.g. "5m", "1h30m", 300, -1)')
            seconds = sign * sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise InvalidRequest(f"invalid keep_alive {value!r}")
    if not math.isfinite(seconds) or abs(seconds) > MAX_KEEP_ALIVE:
        # Go's time.Duration holds about 292 years; past that (or NaN) Ollama cannot parse it either
        raise InvalidRequest(f"invalid keep_alive {value!r}: use a duration under {int(MAX_KEEP_ALIVE)} seconds")
    return None if seconds < 0 else seconds


__all__ = ["MAX_KEEP_ALIVE", "parse_duration"]
