"""Loading and unloading the extension: one session per kernel, magics, tab completion."""

from __future__ import annotations

from typing import Any

from .cell_log import cell_log
from .errorhelp import error_log
from .magics import OllamaMagics
from .manage import VERBS, model_names
from .session import NotebookSession

_MODEL_VERBS = {"show", "rm", "cp", "load", "unload", "use"}
_loaded: dict[int, OllamaMagics] = {}


def load(shell: Any) -> OllamaMagics:
    magics = _loaded.get(id(shell))
    if magics is None:
        magics = OllamaMagics(shell, NotebookSession(shell))
        _loaded[id(shell)] = magics
    shell.register_magics(magics)
    error_log(shell).install()
    cell_log(shell).install()
    _install_completer(shell, magics.session)
    return magics


def unload(shell: Any) -> None:
    """``%unload_ext``/``%reload_ext``: stop the server and free the models, then forget the session."""
    magics = _loaded.pop(id(shell), None)
    if magics is not None:
        magics.session.close()
        error_log(shell).uninstall()
        cell_log(shell).uninstall()
        for kind in ("line", "cell"):
            for name in ("chat", "embed", "ollama"):
                shell.magics_manager.magics[kind].pop(name, None)


def session_of(shell: Any) -> NotebookSession:
    """The session the magics use (the widget panels share it)."""
    return load(shell).session


def _install_completer(shell: Any, session: NotebookSession) -> None:
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
