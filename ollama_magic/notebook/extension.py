"""Loading and unloading the extension: the magics, the cell and error logs, tab completion.

The session itself lives in the per-shell registry of ``session.py`` (``session_for``), which imports
nothing of this; the ``%ollama`` verbs are imported here so that each registers itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# The verb groups register themselves, in the order %ollama help lists them; errorhelp adds fix last.
from .verbs import VERBS, cache, learn, models, panel, plan, rpc, server, threads, tokens  # noqa: F401, I001 - imported to register
from .cell_log import cell_log
from .errorhelp import error_log
from .magics import OllamaMagics
from .session import NotebookSession, forget, per_shell, session_for
from .verbs.models import model_names

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

_MODEL_VERBS = {"show", "rm", "cp", "load", "unload", "use"}


def load(shell: InteractiveShell) -> OllamaMagics:
    magics = per_shell(shell, "magics", lambda: OllamaMagics(shell, session_for(shell)))
    shell.register_magics(magics)
    error_log(shell).install()
    cell_log(shell).install()
    _install_completer(shell, magics.session)
    return magics


def unload(shell: InteractiveShell) -> None:
    """``%unload_ext``/``%reload_ext``: stop the server and free the models, then forget the session."""
    magics = forget(shell, "magics")
    session = forget(shell, "session")
    if session is not None:
        session.close()
    if magics is not None:
        error_log(shell).uninstall()
        cell_log(shell).uninstall()
        for kind in ("line", "cell"):
            for name in ("chat", "embed", "ollama"):
                shell.magics_manager.magics[kind].pop(name, None)


def session_of(shell: InteractiveShell) -> NotebookSession:
    """The session the magics use (the widget panels share it); loads the extension if it is not loaded."""
    return load(shell).session


def _install_completer(shell: InteractiveShell, session: NotebookSession) -> None:
    def complete(_self: Any, event: Any) -> list[str]:
        words = event.line.split()
        typing_new_word = event.line.endswith(" ")
        position = len(words) if typing_new_word else len(words) - 1
        previous = words[-1] if typing_new_word else (words[-2] if len(words) >= 2 else "")
        if previous in ("-m", "--model"):
            return model_names(session)
        if words and words[0].endswith("ollama"):
            if position == 1:
                return list(VERBS)
            if position >= 2 and words[1] in _MODEL_VERBS:
                return model_names(session)
        return []

    try:
        shell.set_hook("complete_command", complete, str_key="%ollama")
        for key in ("%%chat", "%chat", "%embed", "%%embed"):
            shell.set_hook("complete_command", complete, str_key=key)
    except Exception:  # noqa: BLE001 - completion is a convenience; an IPython without the hook still works
        pass
