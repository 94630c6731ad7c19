"""The embeddings panel: embed a few lines of text, or a DataFrame column, and see them in 2-D.

It is ``%embed`` plus ``plot_projection`` behind a button: the texts go through
:func:`ollama_magic.notebook.embeddings.embed_frame` (the magic's own call), in a background thread
so the kernel keeps handling widget messages meanwhile. The plot is drawn on a matplotlib ``Figure``
that pyplot never sees (no figure leaks into the next cell's output, no GUI backend involved) and
handed to an ``Output`` widget as PNG data, by setting its ``outputs`` trait, which is safe from a
thread (``with output:`` is not).
"""

from __future__ import annotations

import base64
import io
import time
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ...errors import InvalidRequest, MissingPackage
from ..embeddings import embed_frame, plot_projection
from ._common import Panel, StatusLine, model_choices

if TYPE_CHECKING:
    from ..session import NotebookSession

#: Past this many points the labels hide each other; the dots alone say more.
MAX_LABELS = 30


class EmbeddingsPanel(Panel):
    """Embed texts (one per line, or a DataFrame column from the notebook) and plot their projection.

    Parameters
    ----------
    session:
        The kernel's ``NotebookSession``: its backend embeds, its ``embed_model`` is the default and
        its shell's namespace holds the DataFrames the panel can name.

    The last result stays in ``.frame`` (the DataFrame ``%embed`` would return); "save as" also puts it
    in the notebook under that name.
    """

    def __init__(self, session: NotebookSession) -> None:
        super().__init__()
        self.session = session
        self.frame: Any = None

        self.status = StatusLine()
        self.model = widgets.Dropdown(description="Model", layout=widgets.Layout(width="auto"))
        self.texts = widgets.Textarea(placeholder="One text per line", rows=6, layout=widgets.Layout(width="100%"))
        self.variable = widgets.Text(description="or DataFrame", placeholder="variable name",
                                     style={"description_width": "initial"}, layout=widgets.Layout(width="260px"))
        self.column = widgets.Text(description="column", placeholder="(its text column)",
                                   layout=widgets.Layout(width="240px"))
        self.output_name = widgets.Text(description="save as", placeholder="(optional variable)",
                                        layout=widgets.Layout(width="240px"))
        self.embed_button = widgets.Button(description="Embed", button_style="primary", icon="braille",
                                           tooltip="Embed the texts and plot them")
        self.plot = widgets.Output()
        self.widget = widgets.VBox([
            self.model,
            self.texts,
            widgets.HBox([self.variable, self.column]),
            widgets.HBox([self.embed_button, self.output_name]),
            self.status.widget,
            self.plot,
        ])
        self._busy_widgets = [self.embed_button, self.model, self.texts, self.variable, self.column,
                              self.output_name]
        self.embed_button.on_click(lambda _: self.embed())
        self.refresh_models()

    def refresh_models(self) -> None:
        """The installed models, keeping the selection (default: the session's embedding model)."""
        names, selected = model_choices(self.session, self.model.value, self.session.embed_model, self.status)
        self.model.options = names
        self.model.value = selected

    def source(self) -> tuple[Any, str | None, str]:
        """What to embed: (value for ``embed_frame``, column, a description); InvalidRequest if nothing."""
        name = self.variable.value.strip()
        column = self.column.value.strip() or None
        if name:
            namespace = getattr(self.session.shell, "user_ns", None)
            if namespace is None:
                raise InvalidRequest("no notebook variables here: this session has no IPython shell")
            if name not in namespace:
                raise InvalidRequest(f"no variable named {name!r} in the notebook")
            return namespace[name], column, name + (f"[{column!r}]" if column else "")
        if column:
            raise InvalidRequest("a column needs a DataFrame: name the variable that holds it")
        lines = [line.strip() for line in self.texts.value.splitlines() if line.strip()]
        if not lines:
            raise InvalidRequest("nothing to embed: write one text per line, or name a DataFrame variable")
        return lines, None, "the lines"

    def embed(self) -> bool:
        """Embed in the background, then plot; False when nothing was started (the reason is shown)."""
        if self.busy or self._closed:
            return False
        try:
            value, column, what = self.source()
            save_as = self.output_name.value.strip()
            if save_as and not save_as.isidentifier():
                raise InvalidRequest(f"cannot save as {save_as!r}: not a Python variable name")
            if save_as and getattr(self.session.shell, "user_ns", None) is None:
                raise InvalidRequest("cannot save a variable: this session has no IPython shell")
        except InvalidRequest as exc:
            self.status.error(str(exc))
            return False
        model = self.model.value
        started = time.monotonic()

        def work() -> tuple[Any, dict[str, Any] | None, str]:
            frame = embed_frame(self.session.backend, value, model=model, column=column, progress=False)
            try:
                image, note = plot_output(frame), ""
            except MissingPackage as exc:
                image, note = None, f" (no plot: {exc})"
            return frame, image, note

        def done(result: tuple[Any, dict[str, Any] | None, str]) -> None:
            frame, image, note = result
            self.frame = frame
            if save_as:
                self.session.shell.user_ns[save_as] = frame
            self.plot.outputs = (image,) if image is not None else ()
            dims = len(frame["embedding"].iloc[0]) if len(frame) else 0
            saved = f", saved as {save_as}" if save_as else ""
            self.status.ok(f"{len(frame)} texts × {dims} dims ({model}, {time.monotonic() - started:.1f} s"
                           f"{saved}){note}")

        self.plot.outputs = ()
        started_job = self._run(f"embedding {what} with {model}…", work, done)
        return started_job is not None


def plot_output(frame: Any) -> dict[str, Any]:
    """The frame's 2-D projection as one notebook output (PNG plus a text description).

    Drawn on a bare ``Figure`` (not pyplot), so it is thread-safe and never shows up on its own.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingPackage("plotting embeddings needs matplotlib: pip install matplotlib") from None
    figure = Figure(figsize=(6.4, 4.4), dpi=100)
    axes = figure.subplots()
    plot_projection(frame, ax=axes, labels=len(frame) <= MAX_LABELS)
    axes.set_title(f"{len(frame)} texts, {frame.attrs.get('model', '')}".rstrip(", "))
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return {
        "output_type": "display_data",
        "data": {
            "image/png": base64.b64encode(buffer.getvalue()).decode("ascii"),
            "text/plain": f"<2-D projection of {len(frame)} embeddings>",
        },
        "metadata": {},
    }


__all__ = ["EmbeddingsPanel", "plot_output"]
