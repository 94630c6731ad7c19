"""All panels in one ``Tab``: what ``%ollama panel`` shows.

The panels share the kernel's session with the magics, so a model created here can be used by
``%%chat`` at once, and a turn sent from a cell shows up in the Chat tab when it is next opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from ._common import error_text
from .chat import ChatPanel
from .create import CreatePanel
from .embeddings import EmbeddingsPanel
from .models import ModelsPanel
from .running import RunningPanel

if TYPE_CHECKING:
    from ..session import NotebookSession

TITLES = ("Models", "Running", "Create", "Chat", "Embeddings")


class OllamaPanel:
    """Models, Running, Create, Chat and Embeddings as tabs of one widget.

    Parameters
    ----------
    session:
        The kernel's ``NotebookSession``.
    interval:
        Seconds between refreshes of the Running tab (0 turns its timer off).

    A model created in the Create tab appears in the Models list and in the Chat and Embeddings
    model menus; opening the Chat tab picks up threads that ``%%chat`` changed meanwhile.
    """

    def __init__(self, session: NotebookSession, *, interval: float = 1.0) -> None:
        self.session = session
        self.models = ModelsPanel(session)
        self.running = RunningPanel(session, interval=interval)
        self.create = CreatePanel(session, on_created=self._created)
        self.chat = ChatPanel(session)
        self.embeddings = EmbeddingsPanel(session)
        self.panels = (self.models, self.running, self.create, self.chat, self.embeddings)
        self.widget = widgets.Tab(children=[p.widget for p in self.panels], titles=TITLES)
        self.widget.observe(self._on_tab, names="selected_index")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def refresh(self) -> None:
        """Bring every tab up to date with the backend and the conversations (e.g. after magics ran)."""
        self.models.refresh()
        self.running.refresh()
        self.create.refresh_models()
        self._refresh_menus()

    def close(self) -> None:
        """Stop the Running timer and any chat turn or job, then close every widget."""
        for panel in self.panels:
            panel.close()
        self.widget.close()

    def _created(self, name: str) -> None:
        """Called by the Create tab (from its worker thread) with the new model's name."""
        self.models.refresh()
        self._refresh_menus()

    def _refresh_menus(self) -> None:
        if not self.chat.busy:
            self.chat.refresh()
        if not self.embeddings.busy:
            self.embeddings.refresh_models()

    def _on_tab(self, change: dict[str, Any]) -> None:
        """Opening Chat or Embeddings refreshes their menus: cells may have changed models or threads."""
        title = TITLES[change["new"]] if change["new"] is not None else None
        try:
            if title == "Chat" and not self.chat.busy:
                self.chat.refresh()
            elif title == "Embeddings" and not self.embeddings.busy:
                self.embeddings.refresh_models()
        except Exception as exc:  # noqa: BLE001 - shown in the tab, never a traceback
            panel = self.chat if title == "Chat" else self.embeddings
            panel.status.error(error_text(exc))


def panel(session: NotebookSession | None = None, *, interval: float = 1.0) -> OllamaPanel:
    """The kernel's panel: ``session`` defaults to the one the magics use (``current_session()``)."""
    if session is None:
        from ..session import current

        session = current()
    return OllamaPanel(session, interval=interval)


__all__ = ["OllamaPanel", "TITLES", "panel"]
