"""``%%chat --think`` / ``--dry-run``, ``%ollama history --thinking`` and ``%ollama tokens`` in a real
IPython shell, on the real model."""

from __future__ import annotations

from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.getipython import get_ipython
from IPython.testing.globalipapp import start_ipython
from IPython.utils.capture import capture_output

from ollama_magic.store import ModelStore

from .test_api_frontier import THINK_TEMPLATE

pytestmark = pytest.mark.integration
SHORT = "--seed 1 --temperature 0 --num-predict 12"


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory, clone_registered) -> Path:
    store: ModelStore = clone_registered(tmp_path_factory.mktemp("magics-frontier") / "models")
    list(store.create("thinker", f'FROM gemma3:270m\nTEMPLATE """{THINK_TEMPLATE}"""'))
    return store.root


@pytest.fixture
def ip(models_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OLLAMA_MODELS", str(models_root))
    monkeypatch.setenv("OLLAMA_MAGIC_CONVERSATIONS", str(tmp_path / "conversations"))
    shell = start_ipython() or get_ipython()
    shell.user_ns["__session__"] = str(tmp_path / "frontier.ipynb")
    shell.extension_manager.load_extension("ollama_magic")
    yield shell
    shell.extension_manager.unload_extension("ollama_magic")


def test_chat_think_shows_the_trace_collapsed_and_keeps_it_in_the_thread(ip) -> None:
    with capture_output():
        reply = ip.run_cell_magic("chat", f"-m thinker --think low {SHORT}", "What is 2+2?")
    assert reply.thinking
    markdown = reply._repr_markdown_()
    assert markdown.startswith("<details><summary>Thinking</summary>") and "</details>" in markdown
    hidden = ip.run_line_magic("ollama", "history").data
    shown = ip.run_line_magic("ollama", "history --thinking").data
    assert "<details>" not in hidden and "<details><summary>Thinking</summary>" in shown
    # the trace goes back to the template with the thread's next turn
    with capture_output():
        prompt = ip.run_cell_magic("chat", "-m thinker --dry-run", "And 3+3?")
    first_line = reply.thinking.strip().splitlines()[0]
    assert f"<think>{reply.thinking}</think>" in prompt and first_line in prompt
    assert prompt.endswith("<start_of_turn>model\n<think>\n")


def test_chat_think_on_a_model_that_cannot_think_is_one_line(ip) -> None:
    with pytest.raises(UsageError, match='"gemma3:270m" does not support thinking'):
        ip.run_line_magic("chat", "-m gemma3:270m --think hello")
    with pytest.raises(UsageError, match="invalid level"):
        ip.run_line_magic("chat", "-m gemma3:270m --think=extreme hello")


def test_dry_run_shows_the_prompt_and_records_nothing(ip) -> None:
    prompt = ip.run_line_magic("chat", "-m gemma3:270m --dry-run Hello there")
    assert prompt == "<start_of_turn>user\nHello there<end_of_turn>\n<start_of_turn>model\n"
    assert ip.run_line_magic("ollama", "threads").empty


def test_ollama_tokens_counts_text_and_variables(ip) -> None:
    counted = ip.run_line_magic("ollama", "tokens -m gemma3:270m Hello world")
    assert len(counted) == len(counted.ids) >= 2 and "".join(counted.pieces) == "Hello world"
    assert str(counted).startswith(f"{len(counted)} tokens for gemma3:270m: ")
    ip.user_ns["essay"] = "The quick brown fox jumps over the lazy dog."
    from_var = ip.run_line_magic("ollama", "tokens -m gemma3:270m essay")
    assert "".join(from_var.pieces) == ip.user_ns["essay"]
