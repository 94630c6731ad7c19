"""The loaded-models panel: what is in memory, where it runs, how long it stays, and an Unload button.

It refreshes itself from a daemon thread every ``interval`` seconds while open, so the keep-alive
countdown moves without a cell running. The thread only sets trait values (HTML cells, button
states); ``close()`` stops it. Row widgets are kept per model between refreshes, so a tick sends only
the cells that changed instead of rebuilding the grid every second.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ...formatting import device_bytes, gpu_layers, human_bytes, processor
from ._common import COLORS, Panel, StatusLine, error_text, escape

if TYPE_CHECKING:
    from ..session import NotebookSession

log = logging.getLogger("ollama_magic")

COLUMNS = [("name", "NAME"), ("size", "SIZE"), ("processor", "PROCESSOR"), ("gpu_layers", "GPU LAYERS"),
           ("context", "CONTEXT"), ("until", "UNLOADS IN"), ("devices", "DEVICES")]


def time_left(expires_at: datetime | None, now: datetime | None = None) -> str:
    """A countdown to the keep-alive expiry: ``4m 59s``, ``1h 02m``, ``forever`` (Ollama's year-2318
    expiry for keep_alive < 0), ``now`` once it has passed and the scheduler has yet to unload it."""
    if expires_at is None:
        return ""
    if expires_at.year >= 2300:
        return "forever"
    now = now or datetime.now(timezone.utc)
    if expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=timezone.utc)
    seconds = int((expires_at - now).total_seconds())
    if seconds <= 0:
        return "now"
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def running_rows(models: Any, now: datetime | None = None) -> list[dict[str, str]]:
    """``ps().models`` as rows of display strings."""
    now = now or datetime.now(timezone.utc)
    return [{
        "name": m.model or m.name or "",
        "size": human_bytes(m.size or 0),
        "processor": processor(m.size or 0, m.size_vram or 0),
        "gpu_layers": gpu_layers(m),
        "context": str(m.context_length or ""),
        "until": time_left(m.expires_at, now),
        "devices": device_bytes(m),
    } for m in models]


@dataclass
class _Row:
    cells: list[widgets.HTML]
    button: widgets.Button


class RunningPanel(Panel):
    """Models loaded now, refreshed every ``interval`` seconds while the panel is open.

    Parameters
    ----------
    session:
        The notebook's session; ``ps()`` and ``unload()`` go through ``session.backend``.
    interval:
        Seconds between refreshes; 0 or less turns the timer off (``refresh()`` still works).
    """

    def __init__(self, session: NotebookSession, interval: float = 1.0) -> None:
        super().__init__()
        self.session = session
        self.interval = interval
        self._rows: list[dict[str, str]] = []
        self._row_widgets: dict[str, _Row] = {}
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()

        self.status = StatusLine()
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _b: self._run("refreshing", self.refresh, lambda _r: self.status.clear()))
        self._header = [widgets.HTML(f'<b style="color: {COLORS["info"]}">{title}</b>') for _, title in COLUMNS]
        self._header_spacer = widgets.HTML("")
        self.grid = widgets.GridBox(layout=widgets.Layout(
            grid_template_columns="minmax(160px, 2fr) 1fr 1fr 1fr 1fr auto", grid_gap="2px 12px",
            align_items="center"))
        self.empty_note = widgets.HTML()
        self.widget = widgets.VBox([self.refresh_button, self.grid, self.empty_note, self.status.widget])
        self._busy_widgets = [self.refresh_button]
        self.timer: threading.Thread | None = None

        try:
            self.refresh()
        except Exception as exc:  # noqa: BLE001
            self.status.error(error_text(exc))
        if interval > 0:
            self.timer = threading.Thread(target=self._tick, name="ollama-magic: running models", daemon=True)
            self.timer.start()

    # ---- plain data ------------------------------------------------------------------------------

    def rows(self) -> list[dict[str, str]]:
        """The rows shown after the last refresh."""
        return list(self._rows)

    def refresh(self) -> list[dict[str, str]]:
        """Ask the backend what is loaded and update the grid; returns the rows. Errors (a server that
        went away) show in the status line and leave the last rows in place."""
        with self._refresh_lock:
            try:
                models = self.session.backend.ps().models
            except Exception as exc:  # noqa: BLE001
                self.status.error(error_text(exc))
                return self.rows()
            if self.status.kind == "error" and not self.busy:
                self.status.clear()  # the server answers again
            self._rows = running_rows(models)
            self._update_grid()
            return self.rows()

    def unload(self, name: str) -> None:
        """Unload ``name`` in the background, then refresh (``wait()`` waits for it)."""

        def work() -> bool:
            was_loaded = self.session.backend.unload(name)
            self.refresh()
            return was_loaded

        self._run(f"unloading {name} ...", work,
                  lambda was: self.status.ok(f"unloaded {name}" if was else f"{name} was not loaded"))

    def unload_button(self, name: str) -> widgets.Button | None:
        """The Unload button of ``name``'s row (None when it is not shown)."""
        row = self._row_widgets.get(name)
        return row.button if row else None

    # ---- the grid --------------------------------------------------------------------------------

    def _update_grid(self) -> None:
        names = [r["name"] for r in self._rows]
        for gone in set(self._row_widgets) - set(names):
            row = self._row_widgets.pop(gone)
            for item in (*row.cells, row.button):
                item.close()
        children: list[widgets.Widget] = [*self._header, self._header_spacer] if self._rows else []
        for data in self._rows:
            row = self._row_widgets.get(data["name"])
            if row is None:
                row = self._new_row(data["name"])
                self._row_widgets[data["name"]] = row
            for cell, (key, _title) in zip(row.cells, COLUMNS):
                value = escape(data[key]) if key != "name" else f"<b>{escape(data[key])}</b>"
                if cell.value != value:
                    cell.value = value
            children.extend([*row.cells, row.button])
        if tuple(children) != self.grid.children:
            self.grid.children = children
        note = "" if self._rows else f'<i style="color: {COLORS["info"]}">No model is loaded.</i>'
        if self.empty_note.value != note:
            self.empty_note.value = note

    def _new_row(self, name: str) -> _Row:
        button = widgets.Button(description="Unload", icon="eject", tooltip=f"unload {name} now",
                                layout=widgets.Layout(width="auto"), disabled=self.busy)
        button.on_click(lambda _b: self.unload(name))
        self._busy_widgets.append(button)
        return _Row([widgets.HTML() for _ in COLUMNS], button)

    def _job_finished(self) -> None:
        live = {id(r.button) for r in self._row_widgets.values()}
        self._busy_widgets = [w for w in self._busy_widgets if w is self.refresh_button or id(w) in live]
        super()._job_finished()

    # ---- the timer -------------------------------------------------------------------------------

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            if self.widget.comm is None:  # closed from outside (e.g. by a parent's close)
                break
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - a tick must never kill the timer
                log.exception("refreshing the running-models panel failed")

    def close(self) -> None:
        """Stop the timer (and wait for a tick in progress), then close the widgets."""
        self._stop.set()
        if self.timer is not None and self.timer is not threading.current_thread():
            self.timer.join(timeout=max(5.0, 2 * self.interval))
        super().close()
        for row in self._row_widgets.values():
            for item in (*row.cells, row.button):
                item.close()


__all__ = ["RunningPanel", "running_rows", "time_left"]
