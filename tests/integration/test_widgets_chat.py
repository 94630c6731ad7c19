"""The chat and embeddings panels and the tabbed panel, headless, on the real engine and models.

The widgets run without a front end (ipywidgets falls back to a dummy comm), so clicks are
``button.click()`` and the results are read back from trait values and the conversation store.
Background turns are waited for with ``wait(timeout)``/``Event.wait(timeout)``; nothing is timed.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pandas as pd
import pytest

from ollama_magic.defaults import DEFAULT_CHAT_MODEL
from ollama_magic.engine import Engine
from ollama_magic.notebook.conversations import ConversationStore
from ollama_magic.notebook.session import NotebookSession
from ollama_magic.notebook.widgets import ChatPanel, EmbeddingsPanel, OllamaPanel, panel
from ollama_magic.notebook.widgets.chat import markdown_html, reply_html
from ollama_magic.notebook.widgets.create import SOURCE_MODEL
from ollama_magic.notebook.widgets.panel import TITLES

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"
DEFAULT_CHAT = DEFAULT_CHAT_MODEL  # smollm2:135m: what the panel offers first
WAIT = 180.0  # generous: two shared cores, and the first turn also loads the model
STOP_WAIT = 30.0  # a stopped turn ends after the current token; this only bounds a hang
QUEUED_STOP_WAIT = 5.0  # a queued turn that is stopped ends within a decode step; the slot holder runs far longer


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, clone_registered) -> Iterator[Engine]:
    engine = Engine(clone_registered(tmp_path_factory.mktemp("widgets") / "models"))
    yield engine
    engine.close()


@pytest.fixture
def session(engine: Engine, tmp_path: Path) -> NotebookSession:
    session = NotebookSession(shell=None, engine=engine, conversations=ConversationStore(tmp_path / "conv"))
    # Under pytest ipykernel is imported (by a plugin) but no kernel runs: the first identity lookup
    # asks ipykernel for its connection file, which imports ipykernel.kernelapp, which swaps the
    # `comm` package's factory and manager for its own. Widgets made before that swap hold dummy comms
    # the new manager does not know, and closing them raises KeyError. Look the identity up first.
    session.identity
    return session


@pytest.fixture
def panels() -> Iterator[list[Any]]:
    """Panels made by a test, closed at its end even when it fails (no turn or timer left running)."""
    made: list[Any] = []
    yield made
    for item in made:
        item.close()


def chat_panel(session: NotebookSession, panels: list[Any]) -> ChatPanel:
    chat = ChatPanel(session)
    panels.append(chat)
    return chat


def first_reply_text(chat: ChatPanel) -> threading.Event:
    """Set as soon as the reply widget shows any streamed text."""
    seen = threading.Event()
    chat.reply.observe(lambda change: seen.set() if change["new"] else None, names="value")
    return seen


def roles(messages: list[dict[str, Any]]) -> list[str]:
    return [m["role"] for m in messages]


# ---- chat ------------------------------------------------------------------------------------------


def test_send_streams_the_reply_then_shows_and_records_the_turn(session, panels):
    chat = chat_panel(session, panels)
    assert chat.model.value == DEFAULT_CHAT
    assert chat.thread.value == "main"
    updates: list[tuple[str, bool, bool]] = []
    chat.reply.observe(lambda change: updates.append(
        (change["new"], chat.send_button.disabled, chat.stop_button.disabled)), names="value")
    chat.num_predict.value, chat.seed.value, chat.temperature.value = "16", "7", "0"
    chat.message.value = "Name three colours."

    chat.send_button.click()
    assert chat.wait(WAIT)

    stored = session.conversations.thread(session.identity, "main")
    assert roles(stored) == ["user", "assistant"]
    assert stored[0]["content"] == "Name three colours."
    reply = stored[1]["content"]
    assert reply.strip() and stored[1]["model"] == DEFAULT_CHAT and stored[1]["interrupted"] is False
    streamed = [(value, send, stop) for value, send, stop in updates if value]
    assert streamed, "nothing was streamed into the reply widget"
    assert all(send and not stop for _, send, stop in streamed), "Send must be off and Stop on while streaming"
    # the first token is shown at once, before the reply is complete: it was streamed, not set at the end
    assert any(value == reply_html(reply[:k], model=DEFAULT_CHAT) for k in range(1, len(reply)) for value, _, _ in streamed)
    assert chat.reply.value == ""  # the finished turn moved into the conversation
    assert "Name three colours." in chat.history.value
    assert markdown_html(reply) in chat.history.value
    assert chat.message.value == ""
    assert not chat.send_button.disabled and chat.stop_button.disabled
    assert chat.status.kind == "ok" and DEFAULT_CHAT in chat.status.text
    assert ("main (2)", "main") in chat.thread.options


def test_thread_menu_lists_the_notebooks_threads_and_switching_shows_each_history(session, panels):
    store, me = session.conversations, session.identity
    store.append(me, "other", {"role": "user", "content": "What is **two**?"},
                 {"role": "assistant", "content": "It is `2`.", "model": GEMMA})
    store.append(me, "main", {"role": "user", "content": "hello"},
                 {"role": "assistant", "content": "hi there", "model": GEMMA})
    chat = chat_panel(session, panels)

    assert chat.thread.options == (("other (2)", "other"), ("main (2)", "main"))
    assert chat.thread.value == "main"
    assert "hi there" in chat.history.value and "It is" not in chat.history.value

    chat.thread.value = "other"
    assert "<strong>two</strong>" in chat.history.value and "<code>2</code>" in chat.history.value
    assert "hi there" not in chat.history.value

    store.append(me, "later", {"role": "user", "content": "from a %%chat cell"})
    chat.refresh()
    assert ("later (1)", "later") in chat.thread.options and chat.thread.value == "other"

    chat.new_thread.value = "ideas"  # Enter in the name box
    assert chat.thread.value == "ideas" and ("ideas (0)", "ideas") in chat.thread.options
    assert "No messages in thread ideas yet." in chat.history.value
    assert chat.new_thread.value == ""

    chat.new_thread.value = "bad name!"
    assert chat.status.kind == "error" and "invalid thread name" in chat.status.text
    assert chat.thread.value == "ideas"


def test_stop_ends_a_long_generation_and_keeps_the_partial_reply(session, panels):
    chat = chat_panel(session, panels)
    chat.num_predict.value, chat.seed.value = "500", "3"
    chat.message.value = "Tell me a very long story about a lighthouse keeper and the sea."
    shown = first_reply_text(chat)

    chat.send_button.click()
    assert shown.wait(WAIT), "no token arrived"
    assert chat.busy and not chat.stop_button.disabled and chat.send_button.disabled
    chat.stop_button.click()
    assert chat.wait(STOP_WAIT), "the turn did not end after Stop"

    stored = session.conversations.thread(session.identity, "main")
    assert roles(stored) == ["user", "assistant"]
    assert stored[1]["interrupted"] is True and stored[1]["content"]
    assert not chat.send_button.disabled and chat.stop_button.disabled
    assert chat.status.text.startswith("stopped")
    assert "interrupted" in chat.history.value


def test_stop_ends_a_turn_still_waiting_for_its_slot(monkeypatch, tmp_path, tmp_path_factory, clone_registered,
                                                    panels):
    """Stop works before the first token: here the only slot (OLLAMA_NUM_PARALLEL=1) is held by another
    generation, so the panel's turn waits in the queue; it must end at once, not after the other reply."""
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "1")
    with Engine(clone_registered(tmp_path_factory.mktemp("one-slot") / "models")) as engine:
        session = NotebookSession(shell=None, engine=engine, conversations=ConversationStore(tmp_path / "conv"))
        session.identity  # see the session fixture
        # a grammar that cannot end before 400 numbers keeps the slot busy (a plain prompt may hit EOS)
        long_reply = {"type": "array", "items": {"type": "integer"}, "minItems": 400}
        holder = engine.generate(DEFAULT_CHAT, "Count:", format=long_reply, stream=True,
                                 options={"num_predict": 2000})
        try:
            next(holder)  # the only slot is taken
            [entry] = [e for e in engine.scheduler.loaded() if e.name == DEFAULT_CHAT]
            chat = chat_panel(session, panels)
            chat.message.value = "Hello there"
            chat.send_button.click()
            deadline = time.monotonic() + WAIT
            while entry.runner.waiting < 1:  # the panel's job is queued behind the holder
                assert time.monotonic() < deadline, "the panel's turn never queued"
                time.sleep(0.02)
            chat.stop_button.click()
            assert chat.wait(QUEUED_STOP_WAIT), "Stop did nothing while the turn waited for a slot"
        finally:
            holder.close()
        stored = session.conversations.thread(session.identity, "main")
        assert roles(stored) == ["user", "assistant"]
        assert stored[1]["interrupted"] is True
        assert chat.status.text.startswith("stopped")
        assert not chat.send_button.disabled and chat.stop_button.disabled


def test_reset_empties_the_selected_thread(session, panels):
    store, me = session.conversations, session.identity
    store.append(me, "main", {"role": "user", "content": "hello"},
                 {"role": "assistant", "content": "hi there", "model": GEMMA})
    store.append(me, "keep", {"role": "user", "content": "untouched"})
    chat = chat_panel(session, panels)
    assert "hi there" in chat.history.value

    chat.reset_button.click()

    assert store.thread(me, "main") == []
    assert len(store.thread(me, "keep")) == 1
    assert "No messages in thread main yet." in chat.history.value
    assert ("main (0)", "main") in chat.thread.options
    assert chat.status.kind == "ok" and "2 messages forgotten" in chat.status.text


def test_an_unknown_model_is_one_line_in_the_panel_and_the_message_is_kept(session, engine, panels):
    engine.copy(GEMMA, "doomed")
    chat = chat_panel(session, panels)
    chat.model.value = "doomed:latest"
    engine.delete("doomed")  # gone after the menu was filled, as when a cell runs %ollama rm
    chat.message.value = "hello?"

    chat.send_button.click()
    assert chat.wait(WAIT)

    assert chat.status.kind == "error"
    assert "doomed" in chat.status.text and "not found" in chat.status.text
    assert "Traceback" not in chat.status.widget.value and "var(--jp-error-color1)" in chat.status.widget.value
    assert chat.message.value == "hello?"
    assert session.conversations.thread(session.identity, "main") == []
    assert not chat.send_button.disabled and chat.stop_button.disabled


def test_bad_options_and_empty_messages_are_refused_before_anything_runs(session, panels):
    session.chat_model = "not-installed:1b"
    chat = chat_panel(session, panels)
    assert chat.model.value == "not-installed:1b"  # kept in the menu, so Send can say what is wrong
    chat.message.value = "   "
    assert chat.send() is False and "nothing to say" in chat.status.text
    chat.message.value = "hi"
    chat.seed.value = "abc"
    assert chat.send() is False
    assert chat.status.kind == "error" and chat.status.text == "seed must be an integer, not 'abc'"
    assert chat.worker is None


# ---- embeddings ------------------------------------------------------------------------------------


def png_of(output: dict[str, Any]) -> bytes:
    return base64.b64decode(output["data"]["image/png"])


def test_embeddings_panel_embeds_lines_and_plots_their_projection(session, panels):
    embeddings = EmbeddingsPanel(session)
    panels.append(embeddings)
    assert embeddings.model.value == "all-minilm:latest"
    embeddings.texts.value = "a cat sat on the mat\n\na dog in the park\nquantum field theory\n"

    embeddings.embed_button.click()
    assert embeddings.wait(WAIT)

    assert embeddings.status.kind == "ok", embeddings.status.text
    assert re.match(r"3 texts × 384 dims \(all-minilm:latest", embeddings.status.text)
    assert list(embeddings.frame["text"]) == ["a cat sat on the mat", "a dog in the park", "quantum field theory"]
    (output,) = embeddings.plot.outputs
    assert png_of(output).startswith(b"\x89PNG\r\n\x1a\n")


def test_embeddings_panel_takes_a_dataframe_column_from_the_notebook(session, panels):
    frame = pd.DataFrame({"title": ["red apple", "green pear", "red apple"], "n": [1, 2, 3]})
    session.shell = SimpleNamespace(user_ns={"df": frame})
    embeddings = EmbeddingsPanel(session)
    panels.append(embeddings)

    embeddings.variable.value = "missing"
    assert embeddings.embed() is False
    assert embeddings.status.text == "no variable named 'missing' in the notebook"

    embeddings.variable.value, embeddings.output_name.value = "df", "vectors"
    assert embeddings.embed()
    assert embeddings.wait(WAIT)

    assert embeddings.status.text.startswith("3 texts × 384 dims"), embeddings.status.text
    assert "saved as vectors" in embeddings.status.text
    assert session.shell.user_ns["vectors"] is embeddings.frame
    assert list(embeddings.frame.index) == [0, 1, 2]
    assert len(embeddings.plot.outputs) == 1


# ---- all in one ------------------------------------------------------------------------------------


def test_ollama_panel_has_five_tabs_and_create_refreshes_the_model_menus(session, panels):
    whole = OllamaPanel(session, interval=0)
    panels.append(whole)
    assert whole.widget.titles == ("Models", "Running", "Create", "Chat", "Embeddings") == TITLES
    assert [child for child in whole.widget.children] == [p.widget for p in whole.panels]

    whole.create.source.value = SOURCE_MODEL
    whole.create.refresh_models()
    whole.create.base.value = GEMMA
    whole.create.name.value = "terse"
    whole.create.system.value = "Answer in one word."
    assert whole.create.create() is not None
    assert whole.create.wait(WAIT)

    assert whole.create.status.kind == "ok", whole.create.status.text
    assert "terse:latest" in [row["name"] for row in whole.models.rows()]
    assert "terse:latest" in whole.chat.model.options
    assert "terse:latest" in whole.embeddings.model.options
    assert whole.chat.model.value == DEFAULT_CHAT  # the selection is kept
    session.engine.delete("terse")


def test_closing_the_panel_stops_a_running_turn_and_the_timer(session, panels):
    session.engine.load(DEFAULT_CHAT)  # its runner and keep-alive threads are the engine's, not the panel's
    before = set(threading.enumerate())
    whole = panel(session, interval=0.2)
    chat = whole.chat
    chat.num_predict.value = "500"
    chat.message.value = "Tell me a very long story about a lighthouse keeper and the sea."
    shown = first_reply_text(chat)
    chat.send_button.click()
    assert shown.wait(WAIT), "no token arrived"

    whole.close()

    assert not chat.busy
    assert whole.running.timer is not None and not whole.running.timer.is_alive()
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert left == [], left
    assert session.conversations.thread(session.identity, "main")[-1]["interrupted"] is True
    for item in (whole.widget, chat.widget, chat.send_button, chat.history, whole.running.widget):
        assert item.comm is None  # closed
