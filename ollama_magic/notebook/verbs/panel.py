"""``%ollama panel``: the ipywidgets panels (imported only when asked for)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import parse, verb

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ..session import NotebookSession


@verb("panel", "ipywidgets panels: models, running, create, chat, embeddings")
def panel(session: NotebookSession, argv: list[str], shell: InteractiveShell | None) -> Any:
    parse("panel", argv, lambda p: None)
    from ..widgets import OllamaPanel

    return OllamaPanel(session)


__all__: list[str] = []
