"""The installed-models panel: a filterable table whose selected row the actions apply to.

The table is a ``Select`` whose options are text rows in the code font, so a row is selected with a
click or the arrow keys and the browser does the work; the column header above it uses the same font
and padding. Everything a button does goes through ``session.backend``, as ``%ollama`` does, so the
panel works on the in-kernel engine and on a connected server alike. The plain-data methods
(``rows()``, ``details()``, ``selected``) are what tests and other panels use.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ...formatting import EMPTY_STORE_HINT, model_rows
from ._common import COLORS, MONO_CLASS, MONO_STYLE, Panel, StatusLine, error_text, escape, pre

if TYPE_CHECKING:
    from ..session import NotebookSession

#: (key of a row, column title) in the order shown.
COLUMNS = [("name", "NAME"), ("size", "SIZE"), ("family", "FAMILY"), ("parameters", "PARAMETERS"),
           ("quantization", "QUANTIZATION"), ("modified", "MODIFIED")]

#: keep_alive choices of the Load button: (label, value for backend.load).
KEEP_ALIVE = [("default (5m)", None), ("30 minutes", "30m"), ("1 hour", "1h"), ("forever", -1)]

#: The details sections: (title, field of show()'s answer).
DETAIL_SECTIONS = [("Model", "summary"), ("Parameters", "parameters"), ("Template", "template"),
                   ("System", "system"), ("Modelfile", "modelfile"), ("License", "license")]

_NBSP = "\u00a0"  # an <option> collapses ordinary spaces, so columns are padded with these


def text_table(rows: list[dict[str, str]]) -> tuple[str, list[str]]:
    """(header line, one line per row) with every column padded to its widest cell."""
    widths = {key: max([len(title)] + [len(r[key]) for r in rows]) for key, title in COLUMNS}

    def line(cells: dict[str, str]) -> str:
        return "  ".join(cells[key].ljust(widths[key]) for key, _ in COLUMNS).rstrip()

    return line(dict((key, title) for key, title in COLUMNS)), [line(r) for r in rows]


class ModelsPanel(Panel):
    """Installed models with details, copy, delete (after a confirmation), load/unload and "use".

    Parameters
    ----------
    session:
        The notebook's session; every action goes through ``session.backend``.
    """

    def __init__(self, session: NotebookSession) -> None:
        super().__init__()
        self.session = session
        self._all_rows: list[dict[str, str]] = []
        self._details: dict[str, Any] | None = None
        self._render_lock = threading.RLock()
        self._rendering = False
        self.pending_delete: str | None = None

        self.status = StatusLine()
        self.filter = widgets.Text(placeholder="filter by name, family, ...", continuous_update=True,
                                   layout=widgets.Layout(width="260px"))
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh", tooltip="list the models again")
        self.header = widgets.HTML()
        self.table = widgets.Select(options=[], value=None, rows=8, layout=widgets.Layout(width="100%"))
        self.table.add_class(MONO_CLASS)
        self.empty_note = widgets.HTML()

        self.load_button = widgets.Button(description="Load", icon="play", tooltip="load into memory now")
        self.keep_alive = widgets.Dropdown(options=KEEP_ALIVE, value=None, description="keep",
                                           layout=widgets.Layout(width="180px"),
                                           style={"description_width": "initial"})
        self.unload_button = widgets.Button(description="Unload", icon="eject", tooltip="free its memory now")
        self.use_button = widgets.Button(description="Use in this notebook", icon="check",
                                         tooltip="make it the default model of %%chat (or %embed)",
                                         layout=widgets.Layout(width="auto"))
        self.copy_name = widgets.Text(placeholder="new name", layout=widgets.Layout(width="180px"))
        self.copy_button = widgets.Button(description="Copy", icon="copy", tooltip="copy under the new name")
        self.delete_button = widgets.Button(description="Delete", icon="trash", button_style="danger",
                                            tooltip="delete the model (asks first)")
        self.pull_name = widgets.Text(placeholder="pull: name, hf.co/user/repo or host/ns/model",
                                      layout=widgets.Layout(width="320px"))
        self.pull_insecure = widgets.Checkbox(value=False, description="http", indent=False,
                                              tooltip="plain http (--insecure)", layout=widgets.Layout(width="60px"))
        self.pull_button = widgets.Button(description="Pull", icon="download", tooltip="get it from its registry")
        self.pull_progress = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description="",
                                                   layout=widgets.Layout(display="none", width="260px"))
        self.confirm_text = widgets.HTML()
        self.confirm_button = widgets.Button(description="Delete", button_style="danger")
        self.cancel_button = widgets.Button(description="Cancel")
        self.confirm_box = widgets.HBox([self.confirm_text, self.confirm_button, self.cancel_button],
                                        layout=widgets.Layout(display="none", align_items="center"))
        self.selection_label = widgets.HTML()
        self.details_box = widgets.Accordion(children=[widgets.HTML() for _ in DETAIL_SECTIONS],
                                             titles=tuple(title for title, _ in DETAIL_SECTIONS),
                                             selected_index=None)

        self._actions = [self.load_button, self.keep_alive, self.unload_button, self.use_button, self.copy_name,
                         self.copy_button, self.delete_button]
        self._busy_widgets = [self.refresh_button, *self._actions, self.confirm_button, self.pull_button]

        self.widget = widgets.VBox([
            widgets.HBox([self.filter, self.refresh_button]),
            self.header,
            self.table,
            self.empty_note,
            self.selection_label,
            widgets.HBox([self.load_button, self.keep_alive, self.unload_button, self.use_button],
                         layout=widgets.Layout(flex_flow="row wrap")),
            widgets.HBox([self.copy_name, self.copy_button, self.delete_button],
                         layout=widgets.Layout(flex_flow="row wrap")),
            self.confirm_box,
            widgets.HBox([self.pull_name, self.pull_insecure, self.pull_button, self.pull_progress],
                         layout=widgets.Layout(flex_flow="row wrap", align_items="center")),
            self.details_box,
            self.status.widget,
        ])

        self.filter.observe(lambda _change: self._render(), names="value")
        self.table.observe(self._on_select, names="value")
        self.refresh_button.on_click(lambda _b: self._run("listing models", self.refresh,
                                                          lambda _rows: self.status.clear()))
        self.load_button.on_click(lambda _b: self.load())
        self.unload_button.on_click(lambda _b: self.unload())
        self.use_button.on_click(lambda _b: self.use())
        self.copy_button.on_click(lambda _b: self.copy())
        self.delete_button.on_click(lambda _b: self.ask_delete())
        self.confirm_button.on_click(lambda _b: self.confirm_delete())
        self.cancel_button.on_click(lambda _b: self.cancel_delete())
        self.pull_button.on_click(lambda _b: self.pull())

        try:
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - an unreachable server still gets a panel that says so
            self.status.error(error_text(exc))
            self._render()

    # ---- plain data ------------------------------------------------------------------------------

    def refresh(self) -> list[dict[str, str]]:
        """List the models again (the table keeps its selection when the model is still there);
        returns the rows shown."""
        self._all_rows = model_rows(self.session.backend.list().models)
        return self._render()

    def rows(self) -> list[dict[str, str]]:
        """The rows the table shows now: every installed model matching the filter."""
        needle = self.filter.value.strip().lower()
        if not needle:
            return list(self._all_rows)
        return [r for r in self._all_rows if any(needle in str(v).lower() for v in r.values())]

    @property
    def selected(self) -> str | None:
        return self.table.value

    def select(self, name: str | None) -> None:
        """Select a row by model name (None clears the selection)."""
        self.table.value = name

    def details(self) -> dict[str, Any] | None:
        """show()'s answer for the selected model, as strings by section (None when none is selected)."""
        return self._details

    # ---- actions (each starts a background job; ``wait()`` waits for it) -----------------------

    def load(self, name: str | None = None) -> None:
        name = name or self._need_selection()
        if name:
            keep = self.keep_alive.value
            self._run(f"loading {name} ...", lambda: self.session.backend.load(name, keep_alive=keep),
                      lambda _r: self.status.ok(f"loaded {name}"))

    def unload(self, name: str | None = None) -> None:
        name = name or self._need_selection()
        if name:
            self._run(f"unloading {name} ...", lambda: self.session.backend.unload(name),
                      lambda was: self.status.ok(f"unloaded {name}" if was else f"{name} was not loaded"))

    def use(self, name: str | None = None) -> None:
        """Make the model this notebook's default: of ``%embed`` for an embedding-only model, else of
        ``%%chat`` (a chat default that cannot chat would only fail later)."""
        name = name or self._need_selection()
        if not name:
            return
        embedding = bool(self._details and self._details.get("name") == name and self._details["embedding_only"])

        def done(short: str) -> None:
            self.status.ok(f"{'%embed' if embedding else '%%chat'} now uses {short}")

        self._run(f"checking {name} ...", lambda: self.session.use(name, embedding=embedding), done)

    def copy(self, name: str | None = None, destination: str | None = None) -> None:
        name = name or self._need_selection()
        destination = (destination if destination is not None else self.copy_name.value).strip()
        if not name:
            return
        if not destination:
            self.status.error("type the new name first")
            return

        def work() -> None:
            self.session.backend.copy(name, destination)
            self.refresh()

        def done(_r: Any) -> None:
            self.copy_name.value = ""
            self._select_by_model(destination)
            self.status.ok(f"copied {name} to {destination}")

        self._run(f"copying {name} ...", work, done)

    def ask_delete(self, name: str | None = None) -> None:
        """The first step of a delete: arm it and ask; nothing is deleted until ``confirm_delete``."""
        name = name or self._need_selection()
        if not name:
            return
        self.pending_delete = name
        self.confirm_text.value = (f'<span style="color: {COLORS["warn"]}">Really delete <b>{escape(name)}</b>?'
                                   "&nbsp;</span>")
        self.confirm_button.description = f"Delete {name}"
        self.confirm_box.layout.display = "flex"

    def cancel_delete(self) -> None:
        self.pending_delete = None
        self.confirm_box.layout.display = "none"

    def confirm_delete(self) -> None:
        name = self.pending_delete
        self.cancel_delete()
        if not name:
            return

        def work() -> None:
            self.session.backend.delete(name)
            self.refresh()

        self._run(f"deleting {name} ...", work, lambda _r: self.status.ok(f"deleted {name}"))

    def pull(self, name: str | None = None, insecure: bool | None = None) -> None:
        """Pull the model named in the Pull field (``backend.pull``, as ``%ollama pull``), with its
        progress in the bar; the new model is selected when it is there."""
        name = (name if name is not None else self.pull_name.value).strip()
        insecure = self.pull_insecure.value if insecure is None else insecure
        if not name:
            self.status.error("type the name of the model to pull first")
            return
        bar = self.pull_progress

        def work() -> None:
            bar.value, bar.layout.display = 0.0, "flex"
            for progress in self.session.backend.pull(name, insecure=insecure, stream=True):
                bar.description = (progress.status or "")[:20]
                if progress.total:
                    bar.value = (progress.completed or 0) / progress.total
            self.refresh()

        def done(_r: Any) -> None:
            bar.layout.display = "none"
            self.pull_name.value = ""
            self._select_by_model(name)
            self.status.ok(f"pulled {name}")

        def failed(exc: BaseException) -> None:
            bar.layout.display = "none"
            self.status.error(error_text(exc))

        self._run(f"pulling {name} ...", work, done, failed)

    # ---- rendering -------------------------------------------------------------------------------

    def _render(self) -> list[dict[str, str]]:
        with self._render_lock:
            rows = self.rows()
            header, lines = text_table(rows)
            keep = self.table.value
            names = [r["name"] for r in rows]
            self._rendering = True
            try:
                self.table.options = [(line.replace(" ", _NBSP), r["name"]) for line, r in zip(lines, rows)]
                self.table.value = keep if keep in names else None
                self.table.rows = max(2, min(len(rows), 12))
            finally:
                self._rendering = False
            self.header.value = f'{MONO_STYLE}<div class="{MONO_CLASS}" style="white-space: pre; padding-left: 4px; '\
                                f'color: {COLORS["info"]}"><b>{escape(header)}</b></div>'
            if not self._all_rows:
                hint = escape(EMPTY_STORE_HINT.format(cmd="%ollama"))
                self.empty_note.value = f'<i style="color: {COLORS["info"]}">{hint} Or create one in the Create tab.</i>'
            elif not rows:
                self.empty_note.value = f'<i style="color: {COLORS["info"]}">No model matches the filter.</i>'
            else:
                self.empty_note.value = ""
            if self.table.value != keep or (keep is not None and self._details is None):
                self._show_selection(self.table.value)
            else:
                self._sync_buttons()
            return rows

    def _select_by_model(self, name: str) -> None:
        """Select ``name`` as written or as the store writes it (``copy`` to ``x`` lists ``x:latest``)."""
        names = [r["name"] for r in self.rows()]
        for candidate in (name, f"{name}:latest"):
            if candidate in names:
                self.select(candidate)
                return

    def _on_select(self, change: dict[str, Any]) -> None:
        if not self._rendering:
            self._show_selection(change["new"])

    def _show_selection(self, name: str | None) -> None:
        if self.pending_delete and self.pending_delete != name:
            self.cancel_delete()
        self._details = None
        if name is None:
            self.selection_label.value = ""
            for child in self.details_box.children:
                child.value = ""
        else:
            self._load_details(name)
        self._sync_buttons()

    def _load_details(self, name: str) -> None:
        """show() on selection: one manifest read (or one small request), quick enough for the main
        thread, and the details are then there when the accordion opens."""
        try:
            resp = self.session.backend.show(name)
        except Exception as exc:  # noqa: BLE001
            self.status.error(error_text(exc))
            self.selection_label.value = f"<b>{escape(name)}</b>"
            return
        capabilities = list(resp.capabilities or [])
        info = resp.modelinfo or {}
        arch = info.get("general.architecture", "")
        d = resp.details
        summary = "\n".join(f"{k:<18}{v}" for k, v in [
            ("architecture", arch), ("parameters", d.parameter_size if d else ""),
            ("quantization", d.quantization_level if d else ""),
            ("context length", info.get(f"{arch}.context_length", "")),
            ("embedding length", info.get(f"{arch}.embedding_length", "")),
            ("capabilities", ", ".join(capabilities)),
        ])
        self._details = {
            "name": name, "summary": summary, "parameters": resp.parameters or "", "template": resp.template or "",
            "system": resp.system or "", "modelfile": resp.modelfile or "", "license": resp.license or "",
            "capabilities": capabilities,
            "embedding_only": "embedding" in capabilities and "completion" not in capabilities,
        }
        for child, (_title, key) in zip(self.details_box.children, DETAIL_SECTIONS):
            child.value = pre(self._details[key])
        default = " (this notebook's default)" if name in (self.session.chat_model, self.session.embed_model) else ""
        self.selection_label.value = f"Selected: <b>{escape(name)}</b>{escape(default)}"

    def _need_selection(self) -> str | None:
        if self.selected is None:
            self.status.error("select a model first")
        return self.selected

    def _sync_buttons(self) -> None:
        disabled = self.busy or self.selected is None
        for item in self._actions:
            item.disabled = disabled
        self.refresh_button.disabled = self.busy
        self.confirm_button.disabled = self.busy

    def _job_finished(self) -> None:
        self._sync_buttons()


__all__ = ["ModelsPanel", "text_table"]
