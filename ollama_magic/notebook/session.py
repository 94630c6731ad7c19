"""What one kernel holds for its notebook: which backend answers, the default models, the notebook's
conversations and the HTTP server, shared by the magics and the widget panels.

The in-kernel Engine is created on first use (loading llama.cpp is not free) and kept while a remote
server is connected, so ``disconnect`` returns to the same loaded models.

This module is the bottom of ``notebook/``: it also keeps what each shell holds (its session, its cell
and error logs, the loaded magics) in one per-shell registry (:func:`per_shell`), and imports nothing of
the magics, so the magics, the widgets and ``over`` find the kernel's session here (:func:`current`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from ..backends import Backend
from ..backends import connect as connect_backend
from ..defaults import DEFAULT_CHAT_MODEL, DEFAULT_EMBED_MODEL
from ..errors import InvalidRequest, NotSupported
from ..hosts import DEFAULT_HOST, DEFAULT_PORT
from ..names import ModelName
from .conversations import ConversationStore, default_conversations_root
from .identity import NotebookIdentity, notebook_identity

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from ..engine import Engine

T = TypeVar("T")


@dataclass
class SessionStatus:
    backend: str
    chat_model: str
    embed_model: str
    notebook: str
    server_url: str | None
    gpu_offload: bool | None = None  # whether the backend's llama.cpp build can use a GPU (None: unknown)
    loaded: list[Any] | None = field(default_factory=list)  # the backend's ps() entries (None: not reported)


class NotebookSession:
    def __init__(self, shell: InteractiveShell | None = None, *, conversations: ConversationStore | None = None,
                 engine: Engine | None = None) -> None:
        self.shell = shell
        self.chat_model = DEFAULT_CHAT_MODEL
        self.embed_model = DEFAULT_EMBED_MODEL
        self.conversations = conversations or ConversationStore(default_conversations_root())
        self.remote: Any = None  # RemoteBackend or OpenAIBackend while connected
        self.server: Any = None  # BackgroundServer, created by serve()
        self._engine = engine
        self._owns_engine = engine is None
        self._lock = threading.Lock()

    # ---- backends --------------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The in-kernel Engine (created on first use)."""
        with self._lock:
            if self._engine is None:
                from ..engine import Engine

                self._engine = Engine()
            return self._engine

    @property
    def backend(self) -> Backend:
        return self.remote if self.remote is not None else self.engine

    @property
    def backend_label(self) -> str:
        if self.remote is None:
            return "in-kernel engine"
        return f"remote {self.remote.host} ({self.remote.api} API)"

    def connect(self, url: str, *, api: str = "auto", api_key_env: str | None = None) -> str:
        """Send every call to the server at ``url``: Ollama's API or OpenAI's /v1 (``api="auto"`` asks
        the server which). The key, if any, is read from the environment variable ``api_key_env``.
        Returns a line describing the server; fails (and changes nothing) when none answers."""
        self.remote, description = connect_backend(url, api=api, api_key_env=api_key_env)
        return description

    def disconnect(self) -> bool:
        was_remote = self.remote is not None
        self.remote = None
        return was_remote

    # ---- defaults ----------------------------------------------------------------------------------

    def prepare(self, model: str, notice: Callable[[str], None]) -> bool:
        """Before a chat or an embedding: an embedded default model that is not registered yet is
        registered now, with ``notice`` lines and a progress bar, so the first cell of a fresh kernel
        says why it pauses. A remote server registers (or pulls) its own models. True if it registered."""
        if self.remote is not None:
            return False
        from ..defaults import register_on_first_use
        from ..formatting import byte_progress

        update, close = byte_progress(f"registering {model}")
        try:
            return register_on_first_use(self.engine.store, model, notice, update)
        finally:
            close()

    def use(self, model: str, *, embedding: bool = False) -> str:
        resolve = getattr(self.backend, "resolve", None)
        if resolve is not None:  # an OpenAI server: its own model ids, checked against /v1/models
            name = resolve(model)
        else:
            self.backend.show(model)  # a clear "not found" now rather than at the first chat
            name = ModelName.parse(model).short
        if embedding:
            self.embed_model = name
        else:
            self.chat_model = name
        return name

    # ---- this notebook ---------------------------------------------------------------------------

    @property
    def identity(self) -> NotebookIdentity:
        # Looked up on every call: VS Code and JupyterLab set the notebook path after the kernel starts,
        # and a renamed notebook follows its new name.
        return notebook_identity(self.shell)

    # ---- the HTTP server -------------------------------------------------------------------------

    def serve(self, port: int = DEFAULT_PORT, host: str = DEFAULT_HOST) -> str:
        """Serve the in-kernel engine over HTTP from a daemon thread; returns the URL."""
        if self.remote is not None:
            raise InvalidRequest(f"connected to {self.remote.host}: the server shares the in-kernel engine, "
                                 "so run %ollama disconnect first")
        from ..server import BackgroundServer

        if self.server is not None and self.server.running:
            if self.server.port in (port, 0):
                return self.server.url
            self.server.stop()
        self.server = BackgroundServer(self.engine, host=host, port=port)
        return self.server.start()

    def stop_server(self) -> bool:
        if self.server is None or not self.server.running:
            return False
        self.server.stop()
        return True

    def status(self) -> SessionStatus:
        url = self.server.url if self.server is not None else None
        try:
            running = self.backend.ps()
        except NotSupported:  # an OpenAI-compatible server cannot say what it has loaded
            return SessionStatus(self.backend_label, self.chat_model, self.embed_model, self.identity.label, url,
                                 None, None)
        return SessionStatus(self.backend_label, self.chat_model, self.embed_model, self.identity.label, url,
                             getattr(running, "gpu_offload", None), list(running.models))

    def close(self) -> None:
        self.stop_server()
        if self._owns_engine and self._engine is not None:
            self._engine.close()
            self._engine = None


# ---- one registry of what each shell holds ------------------------------------------------------------

_shells: dict[int, tuple[Any, dict[str, Any]]] = {}
_shells_lock = threading.RLock()  # re-entrant: a make() may ask for another entry (magics -> session)


def per_shell(shell: InteractiveShell, key: str, make: Callable[[], T]) -> T:
    """The shell's ``key`` entry, made by ``make()`` on first use: the one place per-shell state lives
    (the session, the cell log, the error log, the loaded magics)."""
    with _shells_lock:
        held, state = _shells.setdefault(id(shell), (shell, {}))
        if held is not shell:  # another shell got a freed shell's id
            state = {}
            _shells[id(shell)] = (shell, state)
        if key not in state:
            state[key] = make()
        return state[key]


def forget(shell: InteractiveShell, key: str) -> Any:
    """Drop the shell's ``key`` entry (``%unload_ext``); returns it, or None."""
    with _shells_lock:
        held, state = _shells.get(id(shell), (None, {}))
        return state.pop(key, None) if held is shell else None


def session_for(shell: InteractiveShell) -> NotebookSession:
    """The shell's session, the one its magics and panels use (made on first use)."""
    return per_shell(shell, "session", lambda: NotebookSession(shell))


def chat_backend(backend: Backend | None, model: str | None) -> tuple[Backend, str]:
    """``backend`` and ``model``, each defaulting to the notebook session's (its backend, its chat model):
    the Python API's functions take them as optional arguments."""
    if backend is None or model is None:
        session = current()
        backend = backend if backend is not None else session.backend
        model = model or session.chat_model
    return backend, model


def current() -> NotebookSession:
    """The running kernel's session, for code that wants it without a magic."""
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("current_session() needs IPython or Jupyter: run it in a notebook")
    return session_for(shell)


__all__ = ["NotebookSession", "SessionStatus", "chat_backend", "current", "forget", "per_shell", "session_for"]
