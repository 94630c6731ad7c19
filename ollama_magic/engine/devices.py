"""Placeholder until the devices module lands: no offload device (a CPU-only build)."""

from __future__ import annotations

from typing import Any


def offload_devices() -> list[Any]:
    return []
