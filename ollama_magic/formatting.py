"""Human-readable sizes and ages, printed the way the ollama CLI prints them."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Optional


def now_rfc3339() -> str:
    """The current UTC time as Ollama writes ``created_at``."""
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


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


def byte_progress(description: str) -> tuple[Callable[[int, Optional[int]], None], Callable[[], None]]:
    """A tqdm byte bar for long copies; returns (callback, close)."""
    from tqdm.auto import tqdm

    bar: list[tqdm] = []

    def update(advance: int, total: Optional[int]) -> None:
        if not bar:
            bar.append(tqdm(total=total, unit="B", unit_scale=True, desc=description, file=sys.stderr))
        bar[0].update(advance)

    def close() -> None:
        if bar:
            bar[0].close()

    return update, close


class ProgressBars:
    """Pull/push progress as Ollama's CLI shows it: one byte bar per blob (``pulling 2af3b81862c6:
    100% |####| 291M``), every other status on a line of its own. Call it with each progress
    message (``total``/``completed``/``digest`` as the API sends them); ``close()`` at the end."""

    def __init__(self, file: Any = None, *, lines: bool = True) -> None:
        self.file = file
        self.lines = lines  # False: bars only (a caller that sums the statuses up itself)
        self.bars: dict[str, Any] = {}
        self.last_status: str | None = None
        self.seen: list[str] = []

    def __call__(self, progress: Any) -> None:
        from tqdm.auto import tqdm

        status, total = progress.status or "", progress.total
        if status != self.last_status:
            self.seen.append(status)
        if total:
            key = progress.digest or status
            bar = self.bars.get(key)
            if bar is None:
                bar = self.bars[key] = tqdm(total=total, unit="B", unit_scale=True, desc=status,
                                            file=self.file or sys.stderr)
            bar.update(max(0, (progress.completed or 0) - bar.n))
        elif status and status != self.last_status:
            self.close()  # the blobs are done: their bars end before the next line, as in Ollama's CLI
            if self.lines:
                print(status, file=self.file or sys.stderr, flush=True)
        self.last_status = status

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()

    def follow(self, statuses: Any) -> Any:
        """Show every message of a stream; returns the last one (closing the bars even on error)."""
        last = None
        try:
            for last in statuses:
                self(last)
        finally:
            self.close()
            stop = getattr(statuses, "close", None)
            if stop is not None:
                stop()  # Ctrl-C: the transfer stops, what it saved stays resumable
        return last


def processor(size: int, size_vram: int) -> str:
    """Where a loaded model runs, as ``ollama ps`` says it: ``100% CPU``, ``100% GPU``, ``48%/52% CPU/GPU``."""
    if size and size_vram >= size:
        return "100% GPU"
    if not size_vram:
        return "100% CPU"
    gpu = round(100 * size_vram / size)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


def gpu_layers(model: Any) -> str:
    """``0/31``: the model's layers on the GPU, of all; empty when the server does not say."""
    on_gpu, layers = getattr(model, "gpu_layers", None), getattr(model, "layers", None)
    return f"{on_gpu}/{layers}" if on_gpu is not None and layers else ""


def gpu_offload(can_offload: bool | None) -> str:
    """The answer to "can this build use a GPU?" for ``RunningModels.gpu_offload``."""
    if can_offload is None:
        return "not reported by this server"
    if can_offload:
        return "yes: the planner puts the layers that fit on the GPU or RPC devices (num_gpu overrides it)"
    return "no: CPU only (no GPU backend in the llama-cpp-python build, no GPU found, no RPC worker added)"


def device_bytes(model: Any) -> str:
    """``CPU 120 MB, RPC0[127.0.0.1:50052] 310 MB``: a loaded model's bytes per device; empty when
    the server does not say."""
    devices = getattr(model, "devices", None) or {}
    return ", ".join(f"{name} {human_bytes(size)}" for name, size in devices.items())


#: ``ollama ps``'s columns, with GPU LAYERS (ours) after PROCESSOR and DEVICES (ours: bytes per device) last.
PS_HEADER = ["NAME", "ID", "SIZE", "PROCESSOR", "GPU LAYERS", "CONTEXT", "UNTIL", "DEVICES"]
#: the columns of ``model_rows``: the CLI prints some, ``%ollama list`` and the models panel all
#: What a fresh store's empty model list says (``cmd``: ``%ollama`` in a notebook, ``ollama-magic`` in a shell).
EMPTY_STORE_HINT = ("No models yet: {cmd} setup registers the embedded ones, {cmd} pull NAME downloads one, "
                    "{cmd} create NAME --from PATH imports a GGUF.")

MODEL_COLUMNS = ["name", "id", "size", "family", "parameters", "quantization", "modified"]


def model_rows(models: Iterable[Any]) -> list[dict[str, str]]:
    """``ListResponse.models`` as rows of display strings, the one models table of the CLI, the
    magic and the panel (``ollama list``'s ID, size and age, plus the details the notebook shows)."""
    rows = []
    for m in models:
        d = m.details
        rows.append({
            "name": m.model or "",
            "id": (m.digest or "")[:12],
            "size": human_bytes(m.size) if m.size else "",  # OpenAI's /v1/models has no sizes
            "family": (d.family if d else None) or "",
            "parameters": (d.parameter_size if d else None) or "",
            "quantization": (d.quantization_level if d else None) or "",
            "modified": human_age(m.modified_at) if m.modified_at else "",
        })
    return rows


def ps_rows(models: Iterable[Any]) -> list[list[str]]:
    """``ollama ps`` rows for ``ProcessResponse.models``."""
    return [
        [m.model or "", (m.digest or "")[:12], human_bytes(m.size or 0), processor(m.size or 0, m.size_vram or 0),
         gpu_layers(m), str(m.context_length or ""), human_until(m.expires_at) if m.expires_at else "",
         device_bytes(m)]
        for m in models
    ]


def show_sections(resp: Any) -> list[tuple[str, list[tuple[str, str]]]]:
    """The titled key/value sections ``ollama show NAME`` prints for a ``ShowResponse``."""
    info = resp.modelinfo or {}
    arch = info.get("general.architecture", "")
    details = resp.details
    sections: list[tuple[str, list[tuple[str, str]]]] = [
        ("Model", [
            ("architecture", arch),
            ("parameters", details.parameter_size if details else ""),
            ("context length", str(info.get(f"{arch}.context_length", ""))),
            ("embedding length", str(info.get(f"{arch}.embedding_length", ""))),
            ("quantization", details.quantization_level if details else ""),
        ]),
        ("Capabilities", [(c, "") for c in resp.capabilities or []]),
    ]
    projector = getattr(resp, "projector_info", None) or {}
    if projector:  # as `ollama show` prints it, plus the projector's own description
        rows = [
            ("architecture", str(projector.get("general.architecture", ""))),
            ("embedding length", str(projector.get("clip.vision.embedding_length", ""))),
            ("dimensions", str(projector.get("clip.vision.projection_dim", ""))),
        ]
        if projector.get("general.description"):
            rows.append(("description", str(projector["general.description"])))
        sections.insert(1, ("Projector", rows))
    if resp.parameters:
        sections.append(("Parameters", [(*line.split(None, 1), "")[:2] for line in resp.parameters.splitlines()]))  # type: ignore[misc]
    if resp.system:
        sections.append(("System", [(line, "") for line in resp.system.strip().splitlines()[:8]]))
    if resp.license:
        sections.append(("License", [(line, "") for line in resp.license.strip().splitlines()[:4]]))
    return sections
