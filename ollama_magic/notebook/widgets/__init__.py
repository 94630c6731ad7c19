"""ipywidgets panels over the kernel's session: models, running models, create, chat, embeddings.

``panel()`` shows them all in one ``Tab``; each panel also works alone (``ChatPanel(session)``).
Every panel has ``.widget`` (its root box), displays itself, and ``close()`` stops its background
work and closes its widgets. Nothing here is imported when the magics load: ipywidgets is paid for
only by whoever opens a panel.

``panel`` is imported last on purpose: it is the name of the function, not of the submodule
``widgets.panel`` (importing a submodule binds its name in the package; the import below rebinds it).
"""

from __future__ import annotations

from .chat import ChatPanel
from .create import CreatePanel
from .embeddings import EmbeddingsPanel
from .models import ModelsPanel
from .running import RunningPanel
from .panel import OllamaPanel, panel  # noqa: I001 - last, see the docstring

__all__ = ["ChatPanel", "CreatePanel", "EmbeddingsPanel", "ModelsPanel", "OllamaPanel", "RunningPanel", "panel"]
