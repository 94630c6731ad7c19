"""The chat panel shows a thinking model's trace live, collapsed above the answer, then keeps it in the
thread (headless, on the real engine: see test_widgets_chat.py for how the widgets run here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from ollama_magic.engine import Engine
from ollama_magic.notebook.conversations import ConversationStore
from ollama_magic.notebook.session import NotebookSession
from ollama_magic.notebook.widgets import ChatPanel
from ollama_magic.notebook.widgets.chat import thinking_html, trace_html

from .test_api_frontier import THINK_TEMPLATE

pytestmark = pytest.mark.integration
THINKER = "thinker"
WAIT = 180.0


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, clone_registered) -> Iterator[Engine]:
    engine = Engine(clone_registered(tmp_path_factory.mktemp("widgets-think") / "models"))
    engine.create(THINKER, from_="gemma3:270m", template=THINK_TEMPLATE)
    yield engine
    engine.close()


@pytest.fixture
def chat(engine: Engine, tmp_path: Path) -> Iterator[ChatPanel]:
    session = NotebookSession(shell=None, engine=engine, conversations=ConversationStore(tmp_path / "conv"))
    session.identity  # see test_widgets_chat.session
    panel = ChatPanel(session)
    yield panel
    panel.close()


def test_the_trace_streams_live_into_a_collapsed_area_above_the_answer(chat: ChatPanel) -> None:
    chat.model.value = THINKER + ":latest"
    chat.num_predict.value, chat.seed.value, chat.temperature.value = "24", "1", "0"
    assert chat.trace_box.layout.display == "none"  # nothing to show before a turn
    seen: list[tuple[str, str, Any, Any]] = []
    titles: list[str] = []
    chat.trace.observe(lambda change: (seen.append((change["new"], chat.reply.value, chat.trace_box.selected_index,
                                                    chat.trace_box.layout.display)),
                                       titles.append(chat.trace_box.titles[0])), names="value")
    chat.message.value = "What is 2+2?"
    chat.send_button.click()
    assert chat.wait(WAIT)

    stored = chat.session.conversations.thread(chat.session.identity, "main")
    trace = stored[-1]["thinking"]
    assert trace
    live = [(value, reply, selected, display) for value, reply, selected, display in seen if value]
    assert live, "the trace never reached the panel while streaming"
    # shown before the answer had any text, growing, collapsed, visible
    assert any(value == trace_html(trace[:k]) for k in range(1, len(trace)) for value, _, _, _ in live)
    assert all(selected is None and display is None for _, _, selected, display in live)
    assert any(title.startswith("Thinking… (") for title in titles)  # the title says it is still thinking
    # once done the trace lives in the thread's history, collapsed above its answer, and the live area is gone
    assert chat.trace.value == "" and chat.trace_box.layout.display == "none"
    assert thinking_html(trace) in chat.history.value


def test_think_off_sends_no_trace(chat: ChatPanel) -> None:
    chat.model.value = THINKER + ":latest"
    chat.num_predict.value, chat.seed.value, chat.temperature.value = "8", "1", "0"
    chat.think.value = "off"
    chat.message.value = "What is 2+2?"
    chat.send_button.click()
    assert chat.wait(WAIT)
    stored = chat.session.conversations.thread(chat.session.identity, "main")
    assert "thinking" not in stored[-1] and stored[-1]["content"]
