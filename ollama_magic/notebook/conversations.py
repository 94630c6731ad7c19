"""Per-notebook conversations for ``%%chat``: who the notebook is, and its threads on disk.

Every notebook gets a :class:`NotebookIdentity` (its path when the front end tells us, else the
kernel session, else this process) and one JSON file under the conversations root, holding its
named threads of messages. The file survives a kernel restart; two notebooks never share one.

Writes go through :func:`ollama_magic.files.atomic_writer` (temp file, fsync, rename), so a
crash leaves the old conversation or the new one. A file we cannot parse is moved aside, never
overwritten: the user can still read what was in it.

No model is needed here; :func:`fit_to_context` takes the token counter as a function, so the
caller decides how tokens are counted (the engine's tokenizer, or anything else).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Mapping

from ..errors import InvalidRequest, OllamaMagicError
from ..formatting import now_rfc3339
from ..files import atomic_writer, data_dir, exclusive_lock, remove_stale_temp_files

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("ollama_magic")

DEFAULT_THREAD = "main"
ROLES = ("system", "user", "assistant")
STAT_FIELDS = ("total_duration", "eval_count", "prompt_eval_count")
FRAME_COLUMNS = [
    "role", "content", "model", "created_at", "total_duration", "eval_count", "prompt_eval_count", "interrupted",
]
FILE_VERSION = 1
LOCK_FILE = ".conversations.lock"

_THREAD_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_SLUG_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")

ExportFormat = Literal["markdown", "json"]


# ---- notebook identity ----------------------------------------------------------------------------


@dataclass(frozen=True)
class NotebookIdentity:
    """Which notebook a conversation belongs to.

    ``key`` names its file (stable across kernel restarts when the notebook path is known, and safe on
    any filesystem); ``label`` is what a person sees; ``source`` says how sure we are: ``"path"`` (the
    front end told us the notebook), ``"session"`` (the kernel's connection file: lasts as long as the
    kernel session) or ``"fallback"`` (this process only).
    """

    key: str
    label: str
    source: Literal["path", "session", "fallback"]


def notebook_identity(shell: Any = None) -> NotebookIdentity:
    """The identity of the notebook ``shell`` runs (``shell`` may be None outside IPython).

    Looked up in order: ``__session__`` in the user namespace (ipykernel sets it from
    ``JPY_SESSION_NAME``, ipykernel PR #1095), ``__vsc_ipynb_file__`` (VS Code), the
    ``JPY_SESSION_NAME`` environment variable (Jupyter Server), the kernel's connection file
    (``ipykernel.get_connection_file()``), and last this process id.
    """
    path = notebook_path(shell)
    if path is not None:
        return NotebookIdentity(_identity_key("path", path, PurePath(path).stem), path, "path")
    session = kernel_session_id()
    if session is not None:
        return NotebookIdentity(_identity_key("session", session, "session"), f"kernel session {session}", "session")
    pid = f"pid-{os.getpid()}"
    return NotebookIdentity(_identity_key("fallback", pid, pid), f"python process {os.getpid()}", "fallback")


def notebook_path(shell: Any = None) -> str | None:
    """The notebook's path as the front end reports it, or None when no front end does."""
    user_ns = getattr(shell, "user_ns", None) or {}
    candidates = (user_ns.get("__session__"), user_ns.get("__vsc_ipynb_file__"), os.environ.get("JPY_SESSION_NAME"))
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None


def kernel_session_id() -> str | None:
    """The running kernel's id from its connection file name (``kernel-<id>.json``), if in a kernel.

    ipykernel is only asked when it is already imported: in plain Python there is no kernel, and
    importing ipykernel just to learn that would cost the import time users complain about.
    """
    if "ipykernel" not in sys.modules:
        return None
    try:
        from ipykernel import get_connection_file

        connection_file = get_connection_file()
    except Exception:  # not in a running kernel (RuntimeError), an old or odd ipykernel
        return None
    stem = PurePath(str(connection_file)).stem
    session = stem.removeprefix("kernel-")
    return session or None


def _identity_key(source: str, value: str, readable: str) -> str:
    """``<readable slug>-<16 hex digits of sha256(source:value)>``: unique, stable, filesystem-safe."""
    digest = hashlib.sha256(f"{source}:{value}".encode("utf-8")).hexdigest()[:16]
    slug = _SLUG_UNSAFE.sub("-", readable).strip(".-")[:40] or "notebook"
    return f"{slug}-{digest}"


# ---- where conversations live ---------------------------------------------------------------------


def default_conversations_root() -> Path:
    """``$OLLAMA_MAGIC_CONVERSATIONS``, else ``<XDG data dir>/ollama-magic/conversations``.

    Deliberately not derived from ``$OLLAMA_MODELS``: that may be Ollama's own directory, which
    Ollama manages and where our files have no business.
    """
    env = os.environ.get("OLLAMA_MAGIC_CONVERSATIONS")
    if env:
        return Path(env).expanduser()
    return data_dir() / "conversations"


# ---- messages -------------------------------------------------------------------------------------


def new_message(
    role: str,
    content: str,
    model: str | None = None,
    *,
    interrupted: bool = False,
    **stats: int | None,
) -> dict[str, Any]:
    """A message stamped now, ready for :meth:`ConversationStore.append`.

    ``stats`` are Ollama's ``total_duration`` (ns), ``eval_count`` and ``prompt_eval_count``; a
    partial reply (the user interrupted the stream) is kept with ``interrupted=True``.
    """
    message: dict[str, Any] = {"role": role, "content": content, "model": model, "created_at": now_rfc3339()}
    message.update({name: value for name, value in stats.items() if value is not None})
    if interrupted:
        message["interrupted"] = True
    return check_message(message)


def check_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A validated copy of ``message`` with ``model`` and ``created_at`` filled in when missing.

    Checked here rather than when the file is read back, so a bad message never reaches the disk.
    """
    if not isinstance(message, Mapping):
        raise InvalidRequest(f"a message must be a dict, not {type(message).__name__}")
    checked = dict(message)
    if checked.get("role") not in ROLES:
        raise InvalidRequest(f"message role must be one of {', '.join(ROLES)}, not {checked.get('role')!r}")
    if not isinstance(checked.get("content"), str):
        raise InvalidRequest("message content must be a string")
    checked.setdefault("model", None)
    if checked["model"] is not None and not isinstance(checked["model"], str):
        raise InvalidRequest("message model must be a string or None")
    checked.setdefault("created_at", now_rfc3339())
    if not isinstance(checked["created_at"], str):
        raise InvalidRequest("message created_at must be an RFC 3339 string")
    for name in STAT_FIELDS:
        value = checked.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidRequest(f"message {name} must be an int, not {value!r}")
    if not isinstance(checked.get("interrupted", False), bool):
        raise InvalidRequest("message interrupted must be True or False")
    try:
        json.dumps(checked)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"message cannot be stored as JSON: {exc}") from None
    return checked


def as_chat_messages(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Only ``role`` and ``content``: what ``Engine.chat`` (and Ollama's /api/chat) takes."""
    return [{"role": message["role"], "content": message["content"]} for message in messages]


def check_thread_name(name: str) -> str:
    """``name`` if it is 1-64 letters, digits, ``-``, ``_`` or ``.``; else a clear InvalidRequest."""
    if not isinstance(name, str) or not _THREAD_NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid thread name {name!r}: use 1-64 characters from letters, digits, '-', '_' and '.'"
        )
    return name


def to_markdown(messages: list[dict[str, Any]]) -> str:
    """A readable transcript: a bold heading per message (``**assistant** (model)``), content as-is."""
    blocks = []
    for message in messages:
        heading = f"**{message['role']}**"
        if message.get("model"):
            heading += f" ({message['model']})"
        if message.get("interrupted"):
            heading += " *(interrupted)*"
        blocks.append(f"{heading}\n\n{message['content']}")
    return "\n\n".join(blocks) + ("\n" if blocks else "")


# ---- the store ------------------------------------------------------------------------------------


class ConversationStore:
    """Named threads of messages per notebook, one JSON file per notebook under ``root``.

    Every call reads the file and every change writes it back (atomically, under a lock shared with
    other processes on the same root), so a new store object (a kernel restart) or a second kernel on
    the same notebook sees what was written, and nothing is cached that could go stale.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_conversations_root()
        self._thread_lock = threading.RLock()

    def __repr__(self) -> str:
        return f"ConversationStore({str(self.root)!r})"

    def path_for(self, identity: NotebookIdentity) -> Path:
        """The file that holds ``identity``'s threads."""
        return self.root / f"{identity.key}.json"

    # ---- reading ---------------------------------------------------------------------------------

    def thread(self, identity: NotebookIdentity, name: str = DEFAULT_THREAD) -> list[dict[str, Any]]:
        """Thread ``name`` (empty when it does not exist), freshly read: changing it changes nothing stored."""
        check_thread_name(name)
        return self._read(identity)["threads"].get(name, [])

    def threads(self, identity: NotebookIdentity) -> dict[str, int]:
        """Each thread of this notebook and how many messages it holds, in creation order."""
        return {name: len(messages) for name, messages in self._read(identity)["threads"].items()}

    def history_frame(self, identity: NotebookIdentity, name: str = DEFAULT_THREAD) -> pd.DataFrame:
        """Thread ``name`` as a DataFrame: one row per message, times as UTC datetimes and Timedeltas."""
        return messages_frame(self.thread(identity, name))

    def export(
        self,
        identity: NotebookIdentity,
        name: str,
        path: str | Path,
        fmt: ExportFormat | None = None,
    ) -> Path:
        """Write thread ``name`` to ``path`` as Markdown or JSON (from ``fmt``, else the suffix).

        The JSON holds ``{"notebook", "thread", "messages"}``; ``messages`` loads back equal to
        :meth:`thread`. The file is written atomically, like the store's own.
        """
        target = Path(path).expanduser()
        fmt = fmt or _format_from_suffix(target)
        messages = self.thread(identity, name)
        if fmt == "markdown":
            data = to_markdown(messages).encode("utf-8")
        elif fmt == "json":
            document = {"notebook": identity.label, "thread": name, "messages": messages}
            data = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        else:
            raise InvalidRequest(f"unknown export format {fmt!r}: use 'markdown' or 'json'")
        with atomic_writer(target) as fh:
            fh.write(data)
        return target

    # ---- changing --------------------------------------------------------------------------------

    def append(self, identity: NotebookIdentity, name: str, *messages: Mapping[str, Any]) -> int:
        """Add user/assistant messages to the end of thread ``name``; return its new length.

        A system message is refused: it belongs first and only once, which :meth:`set_system` ensures.
        """
        check_thread_name(name)
        checked = [check_message(message) for message in messages]
        if any(message["role"] == "system" for message in checked):
            raise InvalidRequest("use set_system() for the system message: it is kept first, once")
        with self._changing(identity) as document:
            thread = document["threads"].setdefault(name, [])
            thread.extend(checked)
            return len(thread)

    def set_system(self, identity: NotebookIdentity, name: str, text: str | None) -> None:
        """Make ``text`` the system message of thread ``name`` (replacing any), or remove it (None)."""
        check_thread_name(name)
        with self._changing(identity) as document:
            rest = [m for m in document["threads"].get(name, []) if m["role"] != "system"]
            if text is not None:
                rest.insert(0, check_message({"role": "system", "content": text}))
            _put_thread(document, name, rest)

    def reset(self, identity: NotebookIdentity, name: str = DEFAULT_THREAD) -> int:
        """Forget thread ``name`` entirely, system message included; return how many messages it had."""
        check_thread_name(name)
        with self._changing(identity) as document:
            return len(document["threads"].pop(name, []))

    def reset_all(self, identity: NotebookIdentity) -> int:
        """Forget every thread of this notebook; return how many threads there were."""
        with self._changing(identity) as document:
            count = len(document["threads"])
            document["threads"].clear()
            return count

    # ---- the file --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise read-modify-write across threads and processes (two kernels, one root)."""
        with exclusive_lock(self.root, LOCK_FILE, self._thread_lock):
            yield

    @contextlib.contextmanager
    def _changing(self, identity: NotebookIdentity) -> Iterator[dict[str, Any]]:
        """Yield the notebook's document under the lock; write it back if the block succeeds."""
        with self._locked():
            document = self._read(identity)
            yield document
            self._write(identity, document)

    def _read(self, identity: NotebookIdentity) -> dict[str, Any]:
        path = self.path_for(identity)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return _empty_document(identity)
        except OSError as exc:
            raise OllamaMagicError(f"cannot read conversations of {identity.label} from {path}: {exc}") from exc
        try:
            return _parse_document(raw)
        except ValueError as exc:
            self._move_aside(path, exc)
            return _empty_document(identity)

    def _write(self, identity: NotebookIdentity, document: dict[str, Any]) -> None:
        document["notebook"] = identity.label
        data = (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
        remove_stale_temp_files(self.root)
        with atomic_writer(self.path_for(identity)) as fh:
            fh.write(data)

    def _move_aside(self, path: Path, problem: Exception) -> Path:
        """Rename an unparseable file to ``<key>.corrupt-<UTC time>.json`` so nothing is lost."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        aside = path.with_name(f"{path.stem}.corrupt-{stamp}.json")
        counter = 1
        while aside.exists():
            aside = path.with_name(f"{path.stem}.corrupt-{stamp}-{counter}.json")
            counter += 1
        os.replace(path, aside)
        log.warning(
            "conversation file %s could not be read (%s); moved it to %s and started afresh", path, problem, aside
        )
        return aside


def _empty_document(identity: NotebookIdentity) -> dict[str, Any]:
    return {"version": FILE_VERSION, "notebook": identity.label, "threads": {}}


def _parse_document(raw: bytes) -> dict[str, Any]:
    """The document in ``raw``; ValueError when it is not JSON or not shaped like ours."""
    document = json.loads(raw.decode("utf-8"))  # UnicodeDecodeError and JSONDecodeError are ValueErrors
    if not isinstance(document, dict) or not isinstance(document.get("threads"), dict):
        raise ValueError("not a conversations file: no 'threads' object")
    for name, messages in document["threads"].items():
        if not isinstance(messages, list):
            raise ValueError(f"thread {name!r} is not a list")
        try:
            document["threads"][name] = [check_message(message) for message in messages]
        except InvalidRequest as exc:
            raise ValueError(f"thread {name!r}: {exc}") from None
    document.setdefault("version", FILE_VERSION)
    return document


def _put_thread(document: dict[str, Any], name: str, messages: list[dict[str, Any]]) -> None:
    """Store ``messages`` as thread ``name``; an empty thread is dropped, so ``threads()`` lists it no more."""
    if messages:
        document["threads"][name] = messages
    else:
        document["threads"].pop(name, None)


def _format_from_suffix(path: Path) -> ExportFormat:
    suffix = path.suffix.lower()
    if suffix in (".md", ".markdown"):
        return "markdown"
    if suffix == ".json":
        return "json"
    raise InvalidRequest(f"cannot tell the export format from {path.name!r}: name it .md or .json, or pass fmt")


def messages_frame(messages: list[dict[str, Any]]) -> pd.DataFrame:
    """Messages as a typed DataFrame (pandas is imported here, not when the magics load)."""
    import pandas as pd

    rows = pd.DataFrame(list(messages), columns=FRAME_COLUMNS)
    return pd.DataFrame(
        {
            "role": rows["role"].astype(object),
            "content": rows["content"].astype(object),
            "model": rows["model"].astype(object).where(rows["model"].notna(), None),
            "created_at": pd.to_datetime(rows["created_at"], utc=True, format="ISO8601"),
            "total_duration": pd.to_timedelta(rows["total_duration"].astype("Int64").astype("float64"), unit="ns"),
            "eval_count": rows["eval_count"].astype("Int64"),
            "prompt_eval_count": rows["prompt_eval_count"].astype("Int64"),
            "interrupted": rows["interrupted"].astype("boolean").fillna(False).astype(bool),
        },
        columns=FRAME_COLUMNS,
    )


# ---- the context-length guard ---------------------------------------------------------------------


def fit_to_context(
    messages: list[dict[str, Any]],
    count_tokens: Callable[[list[dict[str, Any]]], int],
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    """Drop the oldest whole turns until ``count_tokens(kept) <= limit``; return (kept, messages dropped).

    A turn is a user message and the replies after it, dropped together so the model never sees an
    answer without its question. System messages and the last user message (with anything after it)
    are never dropped: if they alone are over ``limit`` they are returned anyway and the engine
    truncates. The smallest number of turns to drop is found by bisection, so a slow tokenizer is
    called O(log turns) times; that relies on fewer messages never counting more tokens.
    """
    turns = _droppable_turns(messages)

    def kept_without(turn_count: int) -> list[dict[str, Any]]:
        dropped = {index for turn in turns[:turn_count] for index in turn}
        return [message for index, message in enumerate(messages) if index not in dropped]

    if count_tokens(list(messages)) <= limit:
        return list(messages), 0
    low, high = 1, len(turns)  # invariant: dropping `high` turns fits, or nothing more can be dropped
    while low < high:
        middle = (low + high) // 2
        if count_tokens(kept_without(middle)) <= limit:
            high = middle
        else:
            low = middle + 1
    kept = kept_without(high)
    return kept, len(messages) - len(kept)


def _droppable_turns(messages: list[dict[str, Any]]) -> list[list[int]]:
    """Indices of the droppable messages, grouped in turns, oldest first.

    Everything before the last user message except system messages; a turn starts at each user
    message (messages before the first user message form a turn of their own).
    """
    user_indices = [index for index, message in enumerate(messages) if message.get("role") == "user"]
    if user_indices:
        current = user_indices[-1]
    else:  # no question at all: keep the last non-system message as the "current" one
        others = [index for index, message in enumerate(messages) if message.get("role") != "system"]
        current = others[-1] if others else len(messages)
    turns: list[list[int]] = []
    for index in range(current):
        role = messages[index].get("role")
        if role == "system":
            continue
        if role == "user" or not turns:
            turns.append([])
        turns[-1].append(index)
    return turns
