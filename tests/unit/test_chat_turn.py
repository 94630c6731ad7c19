"""One ``%%chat`` turn writes the notebook's conversation file once, whatever flags it has."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import ollama
import pytest

from ollama_magic.notebook.chat import ChatTurn, chat_turn
from ollama_magic.notebook.conversations import ConversationStore
from ollama_magic.notebook.identity import NotebookIdentity


class ScriptedBackend:
    """Answers every chat with the same two chunks (unit level: what matters here is the file)."""

    def __init__(self) -> None:
        self.sent: list[list[dict[str, Any]]] = []

    def chat(self, model: str, messages: list[dict[str, Any]], **_: Any) -> Any:
        self.sent.append(messages)
        chunks = [
            ollama.ChatResponse(model=model, message=ollama.Message(role="assistant", content="Hi"), done=False),
            ollama.ChatResponse(model=model, message=ollama.Message(role="assistant", content="!"), done=True,
                                eval_count=2, prompt_eval_count=5, total_duration=10),
        ]
        return iter_with_close(chunks)


class iter_with_close:  # noqa: N801 - a stream: an iterator with close()
    def __init__(self, items: list[Any]) -> None:
        self._it = iter(items)

    def __iter__(self) -> "iter_with_close":
        return self

    def __next__(self) -> Any:
        return next(self._it)

    def close(self) -> None:
        pass


class View:
    def __init__(self) -> None:
        self.text = ""

    def append(self, piece: str) -> None:
        self.text += piece

    def finish(self) -> None:
        pass


@pytest.fixture
def session(tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(conversations=ConversationStore(tmp_path), backend=ScriptedBackend(), shell=None,
                           identity=NotebookIdentity("nb-1", "nb.ipynb", "path"),
                           prepare=lambda model, notice: False)  # no embedded model to register here


def count_writes(store: ConversationStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    writes: list[int] = []
    real = store._write

    def counted(*args: Any) -> None:
        writes.append(1)
        real(*args)

    monkeypatch.setattr(store, "_write", counted)
    return writes


def test_a_turn_with_new_and_system_writes_the_file_once(session: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    store, nb = session.conversations, session.identity
    store.append(nb, "main", {"role": "user", "content": "old"}, {"role": "assistant", "content": "reply"})
    writes = count_writes(store, monkeypatch)
    reply = chat_turn(session, ChatTurn("Hello", "m", system="Be brief.", new=True), view=View())
    assert reply == "Hi!" and len(writes) == 1  # the old code wrote three times: reset, set_system, append
    assert session.backend.sent[-1] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    thread = store.thread(nb, "main")
    assert [(m["role"], m["content"]) for m in thread] == [("system", "Be brief."), ("user", "Hello"), ("assistant", "Hi!")]
    assert thread[2]["eval_count"] == 2 and thread[2]["model"] == "m" and thread[2]["interrupted"] is False


def test_a_turn_keeps_the_history_and_replaces_the_system_message(session: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    store, nb = session.conversations, session.identity
    store.set_system(nb, "main", "old system")
    store.append(nb, "main", {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"})
    writes = count_writes(store, monkeypatch)
    chat_turn(session, ChatTurn("q2", "m", system="new system"), view=View())
    chat_turn(session, ChatTurn("q3", "m"), view=View())
    assert len(writes) == 2
    assert [m["content"] for m in store.thread(nb, "main")] == ["new system", "q1", "a1", "q2", "Hi!", "q3", "Hi!"]
    assert [m["content"] for m in session.backend.sent[-1]] == ["new system", "q1", "a1", "q2", "Hi!", "q3"]


def test_a_turn_without_history_writes_nothing(session: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    writes = count_writes(session.conversations, monkeypatch)
    chat_turn(session, ChatTurn("q", "m", history=False, system="s"), view=View())
    assert writes == [] and session.backend.sent[-1][0] == {"role": "system", "content": "s"}
