"""Human-readable sizes and ages, printed the way the ollama CLI prints them."""

from __future__ import annotations

from datetime import datetime, timezone


def human_bytes(count: int) -> str:
    """Ollama's ``format.HumanBytes`` (powers of 1000): 291 MB, 1.5 GB, 812 B."""
    for scale, unit in ((10**12, "TB"), (10**9, "GB"), (10**6, "MB"), (10**3, "KB")):
        if count >= scale:
            value = count / scale
            if value >= 10 or value == int(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{count} B"


def human_age(when: datetime, now: datetime | None = None) -> str:
    """``2 minutes ago``, ``About an hour ago``, ``3 days ago``."""
    now = now or datetime.now(timezone.utc)
    seconds = max(0, int((now - when).total_seconds()))
    if seconds < 1:
        return "Less than a second ago"
    for size, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400 * 7, "week"), (86400, "day"),
                       (3600, "hour"), (60, "minute"), (1, "second")):
        if seconds >= size:
            count = seconds // size
            if count == 1:
                return f"About {'an' if unit == 'hour' else 'a'} {unit} ago" if unit != "second" else "1 second ago"
            return f"{count} {unit}s ago"
    return "Less than a second ago"


def human_until(when: datetime, now: datetime | None = None) -> str:
    """``4 minutes from now``, ``Forever`` for Ollama's year-2318 "keep forever" expiry."""
    now = now or datetime.now(timezone.utc)
    if when.year >= 2300:
        return "Forever"
    if when <= now:
        return "Now"
    return human_age(now, when).replace(" ago", " from now")


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain left-aligned table with the column widths of its widest cell."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["    ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)
