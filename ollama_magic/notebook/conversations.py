"""Per-notebook conversations for ``%%chat``: the threads of each notebook, on disk.

Each notebook (its :class:`~ollama_magic.notebook.identity.NotebookIdentity`) has one JSON file under
the conversations root, holding its named threads of messages. The file survives a kernel restart.

Writes go through :func:`ollama_magic.files.atomic_writer` (temp file, fsync, rename), so a
crash leaves the old conversation or the new one. A file we cannot parse is moved aside, never
overwritten: the user can still read what was in it.

A turn changes the file once (:meth:`ConversationStore.record_turn`). The DataFrame view lives in
``frames``, the notebook's identity in ``identity``, the context guard in ``context_fit``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Mapping

from .. import envconfig
from ..errors import InvalidRequest, OllamaMagicError
from ..files import atomic_writer, data_dir, exclusive_lock, remove_stale_temp_files
from ..formatting import now_rfc3339
from .frames import messages_frame
from .identity import NotebookIdentity

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("ollama_magic")

DEFAULT_THREAD = "main"
ROLES = ("system", "user", "assistant")
STAT_FIELDS = ("total_duration", "eval_count", "prompt_eval_count")
FILE_VERSION = 1
LOCK_FILE = ".conversations.lock"

_THREAD_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

ExportFormat = Literal["markdown", "json"]


# ---- where conversations live ---------------------------------------------------------------------


def default_conversations_root() -> Path:
    """``$OLLAMA_MAGIC_CONVERSATIONS``, else ``<XDG data dir>/ollama-magic/conversations``.

    Deliberately not derived from ``$OLLAMA_MODELS``: that may be Ollama's own directory, which
    Ollama manages and where our files have no business.
    """
    env = envconfig.conversations()
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
    partial reply (the user interrupted the stream) is kept with ``interrupted=True``; a reply
    always carries the flag.
    """
    message: dict[str, Any] = {"role": role, "content": content, "model": model, "created_at": now_rfc3339()}
    message.update({name: value for name, value in stats.items() if value is not None})
    if interrupted or role == "assistant":
        message["interrupted"] = interrupted  # a reply says whether it is whole
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
    images = checked.get("images")
    if images is not None and not (isinstance(images, list) and all(isinstance(d, str) and _DIGEST.fullmatch(d)
                                                                    for d in images)):
        raise InvalidRequest("message images must be a list of digests (sha256:<64 hex>): the images "
                             "themselves are stored beside the thread, not in it")
    try:
        json.dumps(checked)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"message cannot be stored as JSON: {exc}") from None
    return checked


def as_chat_messages(messages: list[dict[str, Any]],
                     image: Callable[[str], bytes] | None = None) -> list[dict[str, Any]]:
    """Only ``role``, ``content``, a reply's ``thinking`` and (with ``image``, which reads one by its
    digest) a message's images: what ``Engine.chat`` (and Ollama's /api/chat) takes; the trace goes
    back to the template as Ollama sends it."""
    return [{"role": message["role"], "content": message["content"],
             **({"thinking": message["thinking"]} if message.get("thinking") else {}),
             **({"images": [image(d) for d in message["images"]]} if image and message.get("images") else {})}
            for message in messages]


def check_thread_name(name: str) -> str:
    """``name`` if it is 1-64 letters, digits, ``-``, ``_`` or ``.``; else a clear InvalidRequest."""
    if not isinstance(name, str) or not _THREAD_NAME.fullmatch(name):
        raise InvalidRequest(
            f"invalid thread name {name!r}: use 1-64 characters from letters, digits, '-', '_' and '.'"
        )
    return name


def to_markdown(messages: list[dict[str, Any]], *, thinking: bool = False) -> str:
    """A readable transcript: a bold heading per message (``**assistant** (model)``), content as-is;
    with ``thinking``, each trace collapsed above its answer."""
    from .display import thinking_block

    blocks = []
    for message in messages:
        heading = f"**{message['role']}**"
        if message.get("model"):
            heading += f" ({message['model']})"
        if message.get("interrupted"):
            heading += " *(interrupted)*"
        trace = thinking_block(message.get("thinking") or "") if thinking else ""
        blocks.append(f"{heading}\n\n{trace}{message['content']}")
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

    # ---- images, beside the thread file ------------------------------------------------------

    def images_dir(self, identity: NotebookIdentity) -> Path:
        """Where the images of ``identity``'s threads live, one file per digest (``sha256-<hex>``),
        so the thread JSON stays small and an image sent in ten turns is stored once."""
        return self.root / f"{identity.key}.images"

    def save_image(self, identity: NotebookIdentity, data: bytes) -> str:
        """Store an image's file bytes (once per content); returns its digest ``sha256:<hex>``."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self.images_dir(identity) / digest.replace(":", "-")
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_writer(path) as fh:
                fh.write(data)
        return digest

    def load_image(self, identity: NotebookIdentity, digest: str) -> bytes:
        path = self.images_dir(identity) / digest.replace(":", "-")
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise InvalidRequest(f"image {digest} of this thread is missing from {path.parent}") from None

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

    def record_turn(
        self,
        identity: NotebookIdentity,
        name: str,
        messages: list[Mapping[str, Any]],
        *,
        system: str | None = None,
        reset: bool = False,
    ) -> int:
        """One ``%%chat`` turn's changes in one write: forget the thread first (``reset``), make
        ``system`` its system message (when given), then append ``messages``; return its length."""
        check_thread_name(name)
        checked = [check_message(message) for message in messages]
        if any(message["role"] == "system" for message in checked):
            raise InvalidRequest("pass the system message as system=: it is kept first, once")
        with self._changing(identity) as document:
            thread = [] if reset else document["threads"].get(name, [])
            if system is not None:
                thread = [check_message({"role": "system", "content": system}), *(m for m in thread if m["role"] != "system")]
            thread = [*thread, *checked]
            _put_thread(document, name, thread)
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




__all__ = [
    "DEFAULT_THREAD",
    "ConversationStore",
    "as_chat_messages",
    "check_message",
    "check_thread_name",
    "default_conversations_root",
    "new_message",
    "to_markdown",
]
