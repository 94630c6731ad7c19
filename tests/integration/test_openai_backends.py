"""The notebook against third-party OpenAI-compatible servers on 127.0.0.1: llama-cpp-python's own
server and llama.cpp's ``llama-server``, on the real Gemma 3 270M and MiniLM GGUFs.

The cells are the ones that run against the in-kernel engine; only ``%ollama connect`` changes.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from IPython.core.error import UsageError

from ollama_magic.notebook import display as display_module
from ollama_magic.notebook.conversations import ConversationStore
from ollama_magic.notebook.session import NotebookSession
from ollama_magic.notebook.widgets import ChatPanel, EmbeddingsPanel
from ollama_magic.notebook.widgets.create import CreatePanel
from ollama_magic.notebook.widgets.models import ModelsPanel
from ollama_magic.notebook.widgets.running import RunningPanel

from .conftest import OPENAI_CHAT_MODEL, OPENAI_EMBED_MODEL, LlamaServers, OpenAIServer
from .test_magics import chat, history, ip, models_root  # noqa: F401 - the same shell fixture as the magics' tests

pytestmark = pytest.mark.integration
SHORT = "--seed 1 --num-predict 8"
KEY_ENV = "OLLAMA_MAGIC_TEST_OPENAI_KEY"
WAIT = 180.0
REFERENCE = json.loads((Path(__file__).parent.parent / "fixtures" / "minilm_reference.json").read_text())
COLOUR_SCHEMA = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "green", "blue"]}},
                 "required": ["colour"], "additionalProperties": False}
#: Every %ollama verb an OpenAI server cannot do.
MANAGEMENT = ["create mine --from gemma3:270m", "rm gemma3:270m", "cp gemma3:270m other", "show gemma3:270m",
              "ps", "load gemma3:270m", "unload gemma3:270m", "setup", "pull gemma3:270m", "push gemma3:270m"]


def nothing_loaded_in_the_kernel(session: NotebookSession) -> bool:
    return session._engine is None or not session._engine.scheduler.loaded()


def session_of(shell: Any) -> NotebookSession:
    return shell.magics_manager.registry["OllamaMagics"].session


@pytest.fixture
def keyed(llama_cpp_python_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch) -> OpenAIServer:
    monkeypatch.setenv(KEY_ENV, llama_cpp_python_server.api_key or "")
    return llama_cpp_python_server


def connect(shell: Any, url: str, flags: str = "") -> str:
    return shell.run_line_magic("ollama", f"connect {flags} {url}".replace("  ", " "))


def assert_matches_sentence_transformers(frame: Any, count: int) -> None:
    for text, vector, reference in zip(REFERENCE["texts"][:count], frame.embedding, REFERENCE["vectors"]):
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        assert float(np.dot(vector, reference) / np.linalg.norm(reference)) > 0.99, text


def interrupt_after(count: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Raise KeyboardInterrupt (the kernel's stop button) in the cell after ``count`` streamed pieces."""
    seen: list[str] = []
    original = display_module.StreamDisplay.append

    def append(self: Any, piece: str) -> None:
        original(self, piece)
        seen.append(piece)
        if len(seen) == count:
            raise KeyboardInterrupt

    monkeypatch.setattr(display_module.StreamDisplay, "append", append)
    return seen


def capture_streams(session: NotebookSession, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Keep every stream the backend hands out, to look at its HTTP response afterwards."""
    streams: list[Any] = []
    backend, original = session.backend, session.backend.chat

    def chat_and_keep(*args: Any, **kwargs: Any) -> Any:
        streams.append(original(*args, **kwargs))
        return streams[-1]

    monkeypatch.setattr(backend, "chat", chat_and_keep)
    return streams


# ---- llama-cpp-python's server --------------------------------------------------------------------


def test_connect_detects_the_openai_api_and_the_same_cells_run(ip, keyed: OpenAIServer) -> None:  # noqa: F811
    said = connect(ip, keyed.url, f"--api-key-env {KEY_ENV}")
    assert said == f"connected to {keyed.url}/v1 (OpenAI API; models: {OPENAI_CHAT_MODEL}, {OPENAI_EMBED_MODEL})"
    try:
        status = ip.run_line_magic("ollama", "status")
        assert f"backend:      remote {keyed.url}/v1 (OpenAI API)" in status
        assert "loaded:       not reported by this server" in status  # /v1 cannot say; not an error
        listed = ip.run_line_magic("ollama", "list")
        assert list(listed.name) == [OPENAI_CHAT_MODEL, OPENAI_EMBED_MODEL] and (listed["size"] == "").all()

        first = chat(ip, SHORT, "My name is Ada.")
        second = chat(ip, SHORT, "What is my name?")
        assert first.model == OPENAI_CHAT_MODEL and str(first).strip() and not first.interrupted
        assert str(second).strip() and list(history(ip).role) == ["user", "assistant"] * 2
        # this server streams no token counts (llama-server does: see its test), so none are made up
        assert first.stats["eval_count"] == 0

        frame = ip.run_line_magic("embed", "-m all-minilm:latest " + repr(REFERENCE["texts"][:3]))
        assert frame.embedding[0].shape == (384,)
        assert_matches_sentence_transformers(frame, 3)
        assert nothing_loaded_in_the_kernel(session_of(ip))
    finally:
        assert ip.run_line_magic("ollama", "disconnect") == "back to the in-kernel engine"


def test_keys_come_from_the_environment_and_a_refusal_is_one_line(ip, keyed: OpenAIServer,  # noqa: F811
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UsageError, match=r"refused the request \(401.*--api-key-env VAR$") as refused:
        connect(ip, keyed.url)  # /v1/models answers 401: an OpenAI server, but without the key
    assert "\n" not in str(refused.value)
    monkeypatch.delenv("OLLAMA_MAGIC_TEST_UNSET", raising=False)
    with pytest.raises(UsageError, match="the environment variable OLLAMA_MAGIC_TEST_UNSET .* is not set"):
        connect(ip, keyed.url, "--openai --api-key-env OLLAMA_MAGIC_TEST_UNSET")
    assert "in-kernel engine" in ip.run_line_magic("ollama", "status")  # a failed connect changes nothing


def test_model_management_verbs_answer_one_line_naming_what_is_missing(ip, keyed: OpenAIServer) -> None:  # noqa: F811
    connect(ip, keyed.url, f"--openai --api-key-env {KEY_ENV}")
    try:
        for line in MANAGEMENT:
            with pytest.raises(UsageError) as refused:
                ip.run_line_magic("ollama", line)
            message = str(refused.value)
            assert "speaks OpenAI's /v1 API, which has no way to" in message and "\n" not in message, line
        with pytest.raises(UsageError, match=r'model "nope" not found on .*it serves: gemma3:270m, all-minilm'):
            ip.run_line_magic("ollama", "show nope")  # a wrong name is still "not found", not "unsupported"
    finally:
        ip.run_line_magic("ollama", "disconnect")


def test_use_checks_names_against_v1_models(ip, keyed: OpenAIServer) -> None:  # noqa: F811
    connect(ip, keyed.url, f"--api-key-env {KEY_ENV}")
    try:
        assert ip.run_line_magic("ollama", "use all-minilm --embed") == "%embed now uses all-minilm"
        assert ip.run_line_magic("embed", "'one'").embedding[0].shape == (384,)
        with pytest.raises(UsageError, match=r'model "nope" not found on .*\(choose one with %ollama use NAME\)'):
            ip.run_line_magic("ollama", "use nope")
        with pytest.raises(UsageError, match='model "nope" not found'):
            chat(ip, "-m nope", "hi")
        assert "chat model:   gemma3:270m" in ip.run_line_magic("ollama", "status")
    finally:
        ip.run_line_magic("ollama", "disconnect")


def test_options_and_a_json_schema_reach_the_server(ip, keyed: OpenAIServer) -> None:  # noqa: F811
    connect(ip, keyed.url, f"--api-key-env {KEY_ENV}")
    try:
        line = "--no-history --seed 3 --temperature 1.5 --num-predict 12 --options '{\"top_k\": 100, \"top_p\": 0.95}'"
        assert str(chat(ip, line, "Write a poem.")) == str(chat(ip, line, "Write a poem."))  # seed reached it
        answer = session_of(ip).backend.chat(OPENAI_CHAT_MODEL, [{"role": "user", "content": "Count to ten."}],
                                             options={"num_predict": 3})  # not streamed: usage comes back
        assert answer.eval_count == 3 and answer.done_reason == "length"
        value = chat(ip, "--no-history -f json --temperature 0 --num-predict 30 --schema '"
                     + json.dumps(COLOUR_SCHEMA) + "'", "Pick a colour for the sky.")
        assert set(value) == {"colour"} and value["colour"] in ("red", "green", "blue")
    finally:
        ip.run_line_magic("ollama", "disconnect")


def test_raw_completions_go_to_v1_completions(keyed: OpenAIServer, tmp_path: Path) -> None:
    session = NotebookSession(shell=None, conversations=ConversationStore(tmp_path / "conv"))
    session.connect(keyed.url, api_key_env=KEY_ENV)
    whole = session.backend.generate(OPENAI_CHAT_MODEL, "Once upon a time", options={"num_predict": 5, "seed": 1})
    assert whole.done and whole.eval_count == 5 and whole.response
    pieces = list(session.backend.generate(OPENAI_CHAT_MODEL, "Once upon a time", stream=True,
                                           options={"num_predict": 5, "seed": 1}))
    assert pieces[-1].done and not any(p.done for p in pieces[:-1])
    assert "".join(p.response for p in pieces[:-1])  # streamed piece by piece, then one done chunk


def test_ctrl_c_closes_the_stream_and_keeps_the_partial_reply(ip, keyed: OpenAIServer,  # noqa: F811
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    connect(ip, keyed.url, f"--api-key-env {KEY_ENV}")
    try:
        streams = capture_streams(session_of(ip), monkeypatch)
        seen = interrupt_after(3, monkeypatch)
        reply = chat(ip, "--seed 1 --num-predict 400", "Tell me a long story.")
        assert reply.interrupted and str(reply) == "".join(seen)
        assert streams[0]._stream.response.is_closed  # the connection was dropped, not read to the end
        assert list(history(ip).interrupted) == [False, True]
        monkeypatch.undo()
        assert str(chat(ip, SHORT, "Go on.")).strip()  # the server is fine afterwards
    finally:
        ip.run_line_magic("ollama", "disconnect")


def test_the_panels_drive_an_openai_server_from_python(keyed: OpenAIServer, tmp_path: Path, gemma_blob: Path) -> None:
    session = NotebookSession(shell=None, conversations=ConversationStore(tmp_path / "conv"))
    session.identity  # see test_widgets_chat.session: look the identity up before making widgets
    said = session.connect(f"{keyed.url}/v1", api="openai", api_key_env=KEY_ENV)
    assert said == f"OpenAI API; models: {OPENAI_CHAT_MODEL}, {OPENAI_EMBED_MODEL}"
    session.use(OPENAI_CHAT_MODEL)  # the notebook default (smollm2:135m) is not one this server serves
    made: list[Any] = []
    try:
        models = ModelsPanel(session)
        made.append(models)
        assert [row["name"] for row in models.refresh()] == [OPENAI_CHAT_MODEL, OPENAI_EMBED_MODEL]

        models.select(OPENAI_CHAT_MODEL)
        models.load_button.click()
        assert models.wait(WAIT)
        assert models.status.kind == "error" and "no way to load models" in models.status.text

        create = CreatePanel(session)
        made.append(create)
        create.path.value, create.name.value = str(gemma_blob), "mine"
        create.create()
        assert create.wait(WAIT)
        said = " ".join([*create.errors().values(), create.status.text])
        assert "no way to create models" in said and "Traceback" not in said

        running = RunningPanel(session)
        made.append(running)
        running.refresh()
        assert running.status.kind == "error" and "no way to list the models loaded" in running.status.text

        panel = ChatPanel(session)
        made.append(panel)
        assert panel.model.value == OPENAI_CHAT_MODEL
        panel.num_predict.value, panel.seed.value = "8", "1"
        panel.message.value = "Name three colours."
        panel.send_button.click()
        assert panel.wait(WAIT)
        stored = session.conversations.thread(session.identity, "main")
        assert [m["role"] for m in stored] == ["user", "assistant"] and stored[1]["content"].strip()
        assert stored[1]["model"] == OPENAI_CHAT_MODEL

        session.use("all-minilm", embedding=True)
        embeddings = EmbeddingsPanel(session)
        made.append(embeddings)
        embeddings.texts.value = "one\ntwo\nthree"
        embeddings.embed_button.click()
        assert embeddings.wait(WAIT)
        assert embeddings.frame is not None and len(embeddings.frame) == 3
        assert session._engine is None
    finally:
        for item in made:
            item.close()


def test_stop_in_the_chat_panel_closes_the_stream(keyed: OpenAIServer, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    session = NotebookSession(shell=None, conversations=ConversationStore(tmp_path / "conv"))
    session.identity
    session.connect(keyed.url, api_key_env=KEY_ENV)
    session.use(OPENAI_CHAT_MODEL)
    streams = capture_streams(session, monkeypatch)
    panel = ChatPanel(session)
    try:
        seen = threading.Event()
        panel.reply.observe(lambda change: seen.set() if change["new"] else None, names="value")
        panel.num_predict.value, panel.seed.value = "400", "1"
        panel.message.value = "Tell me a long story."
        panel.send_button.click()
        assert seen.wait(WAIT)
        panel.stop_button.click()
        assert panel.wait(WAIT)
        stored = session.conversations.thread(session.identity, "main")
        assert stored[1]["interrupted"] is True
        assert streams[0]._stream.response.is_closed
    finally:
        panel.close()


# ---- llama.cpp's llama-server ---------------------------------------------------------------------


def test_llama_server_chat_embed_schema_and_ctrl_c(ip, llama_server: LlamaServers,  # noqa: F811
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    said = connect(ip, llama_server.chat.url)  # no flag: llama-server has no /api/version, so /v1 it is
    assert said.startswith(f"connected to {llama_server.chat.url}/v1 (OpenAI API; models: ")
    assert OPENAI_CHAT_MODEL in said
    try:
        assert list(ip.run_line_magic("ollama", "list").name) == [OPENAI_CHAT_MODEL]
        first = chat(ip, SHORT, "My name is Ada.")
        second = chat(ip, SHORT, "What is my name?")
        assert str(first).strip() and first.stats["eval_count"] == 8
        assert second.stats["prompt_eval_count"] > first.stats["prompt_eval_count"]
        line = "--no-history --seed 3 --temperature 1.5 --num-predict 12"
        assert str(chat(ip, line, "Write a poem.")) == str(chat(ip, line, "Write a poem."))
        value = chat(ip, "--no-history -f json --temperature 0 --num-predict 30 --schema '"
                     + json.dumps(COLOUR_SCHEMA) + "'", "Pick a colour for the sky.")
        assert set(value) == {"colour"} and value["colour"] in ("red", "green", "blue")
        for verb in ("ps", "rm gemma3:270m"):
            with pytest.raises(UsageError, match="speaks OpenAI's /v1 API, which has no way to"):
                ip.run_line_magic("ollama", verb)

        streams = capture_streams(session_of(ip), monkeypatch)
        seen = interrupt_after(3, monkeypatch)
        reply = chat(ip, "--seed 1 --num-predict 400", "Tell me a long story.")
        assert reply.interrupted and str(reply) == "".join(seen) and streams[0]._stream.response.is_closed
        monkeypatch.undo()
        assert chat(ip, SHORT, "Go on.").stats["eval_count"] == 8

        connect(ip, llama_server.embed.url, "--openai")
        frame = ip.run_line_magic("embed", repr(REFERENCE["texts"][:3]))  # default all-minilm:latest
        assert_matches_sentence_transformers(frame, 3)
        assert nothing_loaded_in_the_kernel(session_of(ip))
    finally:
        ip.run_line_magic("ollama", "disconnect")
