"""The create panel: a new model from a GGUF file (typed path or upload) or from an installed model,
with a system prompt, a template, parameters and a type to quantize to, and a progress bar while the
weights are imported and quantized.

The form is checked in the kernel before anything starts (the name, each parameter, the source), so
a mistake shows under the field that caused it and nothing is created; what only the backend can
find out (a file that is not GGUF, a template that does not parse) comes back from the worker and
is placed under its field the same way. The creation itself runs in a background thread.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import ipywidgets as widgets

from ...errors import InvalidModelName, ModelNotFound, OllamaMagicError
from ...names import ModelName
from ...options import OPTION_TYPES, parse_parameter_text
from ...store.quantize import QUANTIZED_TYPES, SOURCE_TYPES
from ._common import Panel, StatusLine, close_tree, error_text

if TYPE_CHECKING:
    from ..session import NotebookSession

SOURCE_FILE = "GGUF file"
SOURCE_MODEL = "Installed model"


class ParameterRow:
    """One ``PARAMETER name value`` line of the form: a name (with completion), a value, a remove
    button and an error line of its own."""

    def __init__(self, on_remove: Callable[["ParameterRow"], None], name: str = "", value: str = "") -> None:
        self.name = widgets.Combobox(value=name, options=sorted(OPTION_TYPES), placeholder="temperature",
                                     ensure_option=False, layout=widgets.Layout(width="180px"))
        self.value = widgets.Text(value=value, placeholder="0.2", layout=widgets.Layout(width="180px"))
        self.remove_button = widgets.Button(icon="times", tooltip="remove this parameter",
                                            layout=widgets.Layout(width="36px"))
        self.remove_button.on_click(lambda _b: on_remove(self))
        self.error = StatusLine(hide_when_empty=True)
        self.widget = widgets.VBox([widgets.HBox([self.name, self.value, self.remove_button]), self.error.widget])

    def parse(self) -> tuple[str, Any] | None:
        """(name, typed value), None for an empty row; raises OllamaMagicError naming the problem."""
        name, text = self.name.value.strip(), self.value.value.strip()
        if not name and not text:
            return None
        if not name:
            raise OllamaMagicError("give the parameter a name")
        if not text:
            raise OllamaMagicError(f"parameter '{name}' needs a value")
        return name, parse_parameter_text(name, text)


class CreatePanel(Panel):
    """Create a model from a GGUF file or an installed model.

    Parameters
    ----------
    session:
        The notebook's session; creation goes through ``session.backend.create`` (a remote backend
        uploads a local GGUF first).
    on_created:
        Called with the new model's name after a successful creation, from the worker thread (so it
        should only set trait values, e.g. refresh another panel).
    """

    def __init__(self, session: NotebookSession, on_created: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.session = session
        self.on_created = on_created
        self.created: list[str] = []
        self._prefilled_template = ""
        self._upload_dirs: list[Path] = []
        self._progress_lock = threading.Lock()

        self.status = StatusLine()
        self.source = widgets.ToggleButtons(options=[SOURCE_FILE, SOURCE_MODEL], value=SOURCE_FILE,
                                            style={"button_width": "auto"})
        self.path = widgets.Text(placeholder="/path/to/model.gguf (or a safetensors directory)",
                                 layout=widgets.Layout(width="420px"))
        self.upload = widgets.FileUpload(accept=".gguf", multiple=False, description="Upload",
                                         tooltip="small files only: the browser sends the whole file to the kernel")
        self.path_error = StatusLine(hide_when_empty=True)
        self.file_box = widgets.VBox([widgets.HBox([self.path, self.upload]), self.path_error.widget])
        self.base = widgets.Dropdown(options=[], value=None, layout=widgets.Layout(width="420px"))
        self.base_error = StatusLine(hide_when_empty=True)
        self.model_box = widgets.VBox([self.base, self.base_error.widget], layout=widgets.Layout(display="none"))

        self.name = widgets.Text(placeholder="my-model", description="Name",
                                 layout=widgets.Layout(width="420px"))
        self.name_error = StatusLine(hide_when_empty=True)
        self.system = widgets.Textarea(placeholder="You are a terse assistant.", description="System",
                                       layout=widgets.Layout(width="100%", height="70px"))
        self.system_error = StatusLine(hide_when_empty=True)
        self.template = widgets.Textarea(placeholder="a Go template; picking a base model fills in its own",
                                         description="Template", layout=widgets.Layout(width="100%", height="110px"))
        self.template_error = StatusLine(hide_when_empty=True)
        self.parameter_rows: list[ParameterRow] = []
        self.parameters_box = widgets.VBox([])
        self.add_parameter_button = widgets.Button(description="Add parameter", icon="plus")
        self.parameters_error = StatusLine(hide_when_empty=True)

        self.quantize = widgets.Dropdown(options=[("keep as is", ""), *((t, t) for t in QUANTIZED_TYPES)], value="",
                                         description="Quantize", tooltip=f"an {'/'.join(SOURCE_TYPES)} model only")
        self.create_button = widgets.Button(description="Create", button_style="primary", icon="cogs")
        self.progress = widgets.IntProgress(value=0, min=0, max=100, layout=widgets.Layout(width="260px"))

        self.widget = widgets.VBox([
            self.source, self.file_box, self.model_box,
            self.name, self.name_error.widget,
            self.system, self.system_error.widget,
            self.template, self.template_error.widget,
            widgets.HTML("<b>Parameters</b>"), self.parameters_box, self.add_parameter_button,
            self.parameters_error.widget, self.quantize,
            widgets.HBox([self.create_button, self.progress], layout=widgets.Layout(align_items="center")),
            self.status.widget,
        ])
        self._busy_widgets = [self.create_button, self.upload]
        self._field_errors = {"source": self.path_error, "base": self.base_error, "name": self.name_error,
                              "system": self.system_error, "template": self.template_error,
                              "parameters": self.parameters_error}

        self.source.observe(self._on_source, names="value")
        self.base.observe(self._on_base, names="value")
        self.upload.observe(self._on_upload, names="value")
        self.add_parameter_button.on_click(lambda _b: self.add_parameter())
        self.create_button.on_click(lambda _b: self.create())
        self.refresh_models()

    # ---- the form --------------------------------------------------------------------------------

    def refresh_models(self) -> list[str]:
        """Fill the base-model list again (after a creation elsewhere); returns the names."""
        try:
            names = [m.model for m in self.session.backend.list().models]
        except Exception as exc:  # noqa: BLE001
            self.base_error.error(error_text(exc))
            return []
        keep = self.base.value
        with self.base.hold_trait_notifications():
            self.base.options = names
            self.base.value = keep if keep in names else None
        return names

    def add_parameter(self, name: str = "", value: str = "") -> ParameterRow:
        row = ParameterRow(self.remove_parameter, name, value)
        self.parameter_rows.append(row)
        self.parameters_box.children = [r.widget for r in self.parameter_rows]
        return row

    def remove_parameter(self, row: ParameterRow) -> None:
        if row in self.parameter_rows:
            self.parameter_rows.remove(row)
            self.parameters_box.children = [r.widget for r in self.parameter_rows]
            close_tree(row.widget)

    def errors(self) -> dict[str, str]:
        """The field errors shown now (field -> message; a parameter row is ``parameter N``, 1-based)."""
        shown = {field: line.text for field, line in self._field_errors.items() if line.text}
        shown.update({f"parameter {i}": r.error.text for i, r in enumerate(self.parameter_rows, 1) if r.error.text})
        return shown

    def collect(self) -> tuple[str, dict[str, Any], dict[str, str]]:
        """Check the form: (name, create() fields, errors by field). Quick and side-effect free, so it
        runs in the kernel before any work starts."""
        errors: dict[str, str] = {}
        name = self.name.value.strip()
        try:
            ModelName.parse(name)
        except InvalidModelName as exc:
            errors["name"] = str(exc)

        fields: dict[str, Any] = {}
        if self.source.value == SOURCE_FILE:
            path = self.path.value.strip()
            if not path:
                errors["source"] = "type the path of a GGUF file, or upload one"
            elif not Path(path).expanduser().exists():
                errors["source"] = f"{path}: no such file or directory"
            else:
                fields["from_"] = str(Path(path).expanduser())
        elif self.base.value is None:
            errors["base"] = "pick the model to start from"
        else:
            fields["from_"] = self.base.value

        parameters: dict[str, Any] = {}
        for i, row in enumerate(self.parameter_rows, 1):
            try:
                parsed = row.parse()
            except OllamaMagicError as exc:
                errors[f"parameter {i}"] = str(exc)
                continue
            if parsed is None:
                continue
            key, value = parsed
            if OPTION_TYPES[key] is list:
                parameters.setdefault(key, []).append(value)
            elif key in parameters:
                errors[f"parameter {i}"] = f"parameter '{key}' is set twice"
            else:
                parameters[key] = value
        if parameters:
            fields["parameters"] = parameters
        if self.system.value.strip():
            fields["system"] = self.system.value
        if self.template.value.strip():
            fields["template"] = self.template.value
        if self.quantize.value:
            fields["quantize"] = self.quantize.value
        return name, fields, errors

    # ---- creating --------------------------------------------------------------------------------

    def create(self) -> threading.Thread | None:
        """Check the form and start the creation in the background; None (errors shown under their
        fields) when the form is wrong or a job is running. ``wait()`` waits for it."""
        if self.busy:
            self.status.info("busy: wait for the current job to finish")
            return None
        name, fields, errors = self.collect()
        self._show_errors(errors)
        if errors:
            self.status.error("fix the fields marked above")
            return None
        self.progress.value = 0
        self.progress.bar_style = ""
        done_bytes = [0]

        def on_bytes(advance: int, total: int | None) -> None:
            with self._progress_lock:
                done_bytes[0] += advance
                if total:
                    percent = min(100, int(100 * done_bytes[0] / total))
                    if percent != self.progress.value:  # at most 101 messages for any file size
                        self.progress.value = percent

        def work() -> str:
            for status in self.session.backend.create(name, stream=True, on_bytes=on_bytes, **fields):
                if getattr(status, "status", None):
                    self.status.busy(f"{name}: {status.status}")
                if getattr(status, "total", None) and str(status.status).startswith("quantizing"):
                    with self._progress_lock:  # a quantize comes after any import: the bar follows it now
                        self.progress.value = min(100, int(100 * (status.completed or 0) / status.total))
            return name

        return self._run(f"creating {name} ...", work, lambda created: self._created(created, fields.get("from_")),
                         self._failed)

    def _created(self, name: str, source: str | None) -> None:
        self.progress.value = self.progress.max
        self._forget_upload(source)
        self.progress.bar_style = "success"
        self.created.append(name)
        self.status.ok(f"created {name}")
        self.refresh_models()
        if self.on_created is not None:
            try:
                self.on_created(name)
            except Exception as exc:  # noqa: BLE001 - the model exists; say what went wrong after
                self.status.error(f"created {name}, then: {error_text(exc)}")

    def _failed(self, exc: BaseException) -> None:
        self.progress.bar_style = "danger"
        message = error_text(exc)
        field = field_of_error(exc, self.source.value)
        if field in self._field_errors:
            self._field_errors[field].error(message)
            self.status.error("not created: see the field marked above")
        else:
            self.status.error(message)

    def _show_errors(self, errors: dict[str, str]) -> None:
        for field, line in self._field_errors.items():
            line.show(errors.get(field, ""), "error")
        for i, row in enumerate(self.parameter_rows, 1):
            row.error.show(errors.get(f"parameter {i}", ""), "error")
        self.status.clear()

    # ---- events ----------------------------------------------------------------------------------

    def _on_source(self, change: dict[str, Any]) -> None:
        from_file = change["new"] == SOURCE_FILE
        self.file_box.layout.display = None if from_file else "none"
        self.model_box.layout.display = "none" if from_file else None

    def _on_base(self, change: dict[str, Any]) -> None:
        """Fill in the base model's template (unless the user has written one), since a model created
        from another usually keeps its chat format; show() is one quick read."""
        name = change["new"]
        if name is None:
            return
        try:
            template = self.session.backend.show(name).template or ""
        except Exception as exc:  # noqa: BLE001
            self.base_error.error(error_text(exc))
            return
        self.base_error.clear()
        if self.template.value in ("", self._prefilled_template):
            self.template.value = template
            self._prefilled_template = template

    def _on_upload(self, change: dict[str, Any]) -> None:
        files = change["new"]
        if not files:
            return
        upload = files[0]

        def work() -> Path:
            folder = Path(tempfile.mkdtemp(prefix="ollama-magic-upload-"))
            self._upload_dirs.append(folder)
            target = folder / (Path(upload["name"]).name or "upload.gguf")
            target.write_bytes(bytes(upload["content"]))
            return target

        def done(target: Path) -> None:
            self.source.value = SOURCE_FILE
            self.path.value = str(target)
            self.path_error.clear()
            self.status.ok(f"uploaded {upload['name']}: create the model to import it")

        self._run(f"saving {upload['name']} ...", work, done)

    def _forget_upload(self, source: str | None) -> None:
        """An uploaded file is imported now: remove its temp copy (uploads are in kernel memory and
        on disk until then) and empty the path that named it."""
        if source is None:
            return
        for folder in list(self._upload_dirs):
            if Path(source).parent == folder:
                shutil.rmtree(folder, ignore_errors=True)
                self._upload_dirs.remove(folder)
                self.path.value = ""

    def close(self) -> None:
        """Close the widgets and remove uploaded temp files (the store has its own copy by now)."""
        super().close()
        for folder in self._upload_dirs:
            shutil.rmtree(folder, ignore_errors=True)
        self._upload_dirs.clear()


def field_of_error(exc: BaseException, source: str) -> str:
    """Which form field an error from the backend belongs under (``status`` when none fits)."""
    if isinstance(exc, InvalidModelName):
        return "name"
    if isinstance(exc, ModelNotFound):
        return "base" if source == SOURCE_MODEL else "source"
    text = str(exc).lower()
    if "parameter" in text or "option" in text:
        return "parameters"
    if "template" in text:
        return "template"
    if any(k in text for k in ("no such file", "gguf", "from ", "safetensors", "not a directory")):
        return "base" if source == SOURCE_MODEL else "source"
    return "status"


__all__ = ["CreatePanel", "ParameterRow", "field_of_error"]
