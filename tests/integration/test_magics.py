"""``%%chat``, ``%embed`` and ``%ollama`` in a real IPython shell, on the real models."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import requests
from IPython.core.error import UsageError
from IPython.core.getipython import get_ipython
from IPython.testing.globalipapp import start_ipython
from IPython.utils.capture import capture_output

from conftest import write_tiny_gguf
from ollama_magic.notebook import display as display_module
from ollama_magic.notebook.display import ChatReply

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"
SHORT = "--seed 1 --num-predict 8"


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory, clone_registered) -> Path:
    return clone_registered(tmp_path_factory.mktemp("magics") / "models").root


@pytest.fixture
def ip(models_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A shell with the extension loaded, in notebook ``analysis.ipynb``, with its own conversations."""
    monkeypatch.setenv("OLLAMA_MODELS", str(models_root))
    monkeypatch.setenv("OLLAMA_MAGIC_CONVERSATIONS", str(tmp_path / "conversations"))
    shell = start_ipython() or get_ipython()  # one test shell per process, as IPython's own tests use
    shell.user_ns["__session__"] = str(tmp_path / "analysis.ipynb")
    shell.extension_manager.load_extension("ollama_magic")
    shell.run_line_magic("ollama", f"use {GEMMA}")  # the default is smollm2:135m; these tests run on Gemma
    yield shell
    shell.extension_manager.unload_extension("ollama_magic")


def chat(ip, line: str, cell: str | None = None):  # noqa: ANN001, ANN201
    if cell is None:
        return ip.run_line_magic("chat", line)
    return ip.run_cell_magic("chat", line, cell)


def history(ip, thread: str = "main") -> pd.DataFrame:  # noqa: ANN001
    return ip.run_line_magic("ollama", f"history --df -t {thread}")


def test_chat_streams_into_one_display_and_returns_the_reply(ip) -> None:
    ip.user_ns["topic"] = "the sky"
    with capture_output() as cap:
        reply = chat(ip, SHORT, "Tell me about {topic} in {{braces}}.")
    assert isinstance(reply, ChatReply) and reply and reply.stats["eval_count"] == 8
    ids = {o.transient["display_id"] for o in cap.outputs}
    assert len(ids) == 1 and not cap.outputs[0].update and cap.outputs[-1].update
    last = cap.outputs[-1].data  # the live view is emptied: the reply is the cell's value instead
    assert last.get("text/markdown", last["text/plain"]).strip() == ""
    assert reply.startswith(cap.outputs[1].data["text/plain"])  # updates showed the reply growing
    assert reply._repr_markdown_() == str(reply)
    h = history(ip)
    assert list(h.role) == ["user", "assistant"]
    assert h.content[0] == "Tell me about the sky in {braces}." and h.content[1] == str(reply)
    assert h.model[1] == GEMMA and h.eval_count[1] == 8


def test_update_interval_sets_how_often_the_live_reply_is_redrawn(ip) -> None:
    try:
        ip.run_line_magic("config", "OllamaMagics.update_interval = 0")
        with capture_output() as every_piece:
            reply = chat(ip, f"{SHORT} --no-history", "Count from one to ten.")
        ip.run_line_magic("config", "OllamaMagics.update_interval = 3600")
        with capture_output() as first_only:
            chat(ip, f"{SHORT} --no-history", "Count from one to ten.")
    finally:
        ip.run_line_magic("config", "OllamaMagics.update_interval = 0.1")
    assert len(first_only.outputs) == 2  # the first piece, then the emptied view: nothing in between
    assert len(every_piece.outputs) >= 6 and reply.stats["eval_count"] == 8  # a redraw per piece


def test_follow_up_sends_the_history_and_output_variable(ip) -> None:
    first = chat(ip, SHORT, "My name is Ada.")
    second = chat(ip, f"{SHORT} -o answer", "What is my name?")
    assert ip.user_ns["answer"] is second
    assert second.stats["prompt_eval_count"] > first.stats["prompt_eval_count"] + len(str(first)) // 8
    assert len(history(ip)) == 4


def test_line_form_threads_system_new_and_no_history(ip) -> None:
    chat(ip, f"-t side -s 'Answer in French.' {SHORT} what's up?")
    side = history(ip, "side")
    assert list(side.role) == ["system", "user", "assistant"] and side.content[1] == "what's up?"
    assert history(ip).empty  # thread main untouched
    chat(ip, f"-t side -s 'Answer in German.' {SHORT} and now?")
    side = history(ip, "side")
    assert list(side.role).count("system") == 1 and side.content[0] == "Answer in German."
    chat(ip, f"-t side --new {SHORT} fresh start")
    assert list(history(ip, "side").role) == ["user", "assistant"]
    chat(ip, f"-t side --no-history {SHORT} not recorded")
    assert len(history(ip, "side")) == 2
    threads = ip.run_line_magic("ollama", "threads")
    assert dict(zip(threads.thread, threads.messages)) == {"side": 2}


def test_seeded_no_history_replies_repeat(ip) -> None:
    a = chat(ip, f"--no-history {SHORT} --temperature 0.7", "Name a colour.")
    b = chat(ip, f"--no-history {SHORT} --temperature 0.7", "Name a colour.")
    assert str(a) == str(b)


def test_formats_json_and_code(ip) -> None:
    value = chat(ip, "-f json --seed 5 --num-predict 300 --temperature 0 -o obj --options '{\"repeat_penalty\": 1.3}'",
                 "Give me a JSON object describing a cat.")
    assert isinstance(value, dict) and ip.user_ns["obj"] == value
    code = chat(ip, "-f code --seed 1 --num-predict 16", "Write Python that prints hello.")
    assert code._repr_markdown_().startswith("```\n") and code._repr_markdown_().endswith("\n```")


def test_ctrl_c_keeps_the_partial_reply_and_the_model_healthy(ip, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    original = display_module.StreamDisplay.append

    def interrupt_after_three(self, piece: str) -> None:  # noqa: ANN001
        original(self, piece)
        seen.append(piece)
        if len(seen) == 3:
            raise KeyboardInterrupt  # what the kernel's stop button raises in the main thread

    monkeypatch.setattr(display_module.StreamDisplay, "append", interrupt_after_three)
    reply = chat(ip, "--seed 1 --num-predict 500", "Tell me a long story.")
    assert reply.interrupted and str(reply) == "".join(seen)
    assert reply._repr_markdown_().endswith("*[interrupted]*")
    h = history(ip)
    assert list(h.interrupted) == [False, True] and h.content[1] == "".join(seen)
    monkeypatch.undo()
    engine = ip.magics_manager.registry["OllamaMagics"].session.engine
    [entry] = [e for e in engine.scheduler.loaded() if e.name == GEMMA]
    assert entry.active == 0  # the generation was stopped, not left running
    assert chat(ip, SHORT, "Go on.").stats["eval_count"] == 8


def test_ctrl_c_in_chat_while_the_server_streams_leaves_the_http_stream_whole(ip, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from ollama_magic.server import BackgroundServer

    engine = ip.magics_manager.registry["OllamaMagics"].session.engine
    long_reply = {"type": "array", "items": {"type": "integer"}, "minItems": 400}  # cannot end before num_predict
    body = {"model": GEMMA, "prompt": "Count:", "format": long_reply,
            "options": {"num_predict": 300, "temperature": 0, "stop": []}}
    lines: list[dict] = []
    streaming = threading.Event()

    def http_stream(url: str) -> None:
        with requests.post(url + "/api/generate", json=body, stream=True, timeout=600) as r:
            for line in r.iter_lines():
                lines.append(json.loads(line))
                streaming.set()

    seen: list[str] = []
    overlap: list[bool] = []
    original = display_module.StreamDisplay.append

    def interrupt_after_three(self, piece: str) -> None:  # noqa: ANN001
        original(self, piece)
        seen.append(piece)
        if len(seen) == 3:
            overlap.append(not lines[-1]["done"])  # the HTTP stream is still running beside us
            raise KeyboardInterrupt  # what the kernel's stop button raises in the main thread

    with BackgroundServer(engine, port=0) as server:
        client = threading.Thread(target=http_stream, args=(server.url,))
        client.start()
        assert streaming.wait(120)
        monkeypatch.setattr(display_module.StreamDisplay, "append", interrupt_after_three)
        reply = chat(ip, "--num-predict 500 --no-history", "Tell me a long story.")
        monkeypatch.undo()
        client.join(timeout=600)
    assert reply.interrupted and str(reply) == "".join(seen) and overlap == [True]
    final = lines[-1]
    assert final["done"] and final["done_reason"] == "length" and final["eval_count"] == 300
    generated = final["context"][final["prompt_eval_count"]:]
    text = "".join(line["response"] for line in lines)
    assert text == engine.detokenize(GEMMA, generated).content  # every token arrived, in order
    [entry] = [e for e in engine.scheduler.loaded() if e.name == GEMMA]
    assert entry.active == 0


def test_user_mistakes_are_one_line_errors_and_send_nothing(ip) -> None:
    with pytest.raises(UsageError, match=r"no variable named 'nope'.*\{\{"):
        chat(ip, SHORT, "Hello {nope}")
    with pytest.raises(UsageError, match='model "no-such-model" not found'):
        chat(ip, "-m no-such-model", "Hello")
    with pytest.raises(UsageError, match="--temperature"):
        chat(ip, "--temperature hot", "Hello")
    with pytest.raises(UsageError, match="--options"):
        chat(ip, "--options {nope}", "Hello")
    with pytest.raises(UsageError, match="nothing to say"):
        chat(ip, SHORT, "   ")
    with pytest.raises(UsageError, match='option "top_k" must be an integer'):
        chat(ip, "--options '{\"top_k\": \"x\"}'", "Hello")
    assert history(ip).empty


def test_history_survives_a_kernel_restart_and_notebooks_do_not_share(ip, tmp_path: Path) -> None:
    chat(ip, SHORT, "Remember the number 7.")
    ip.extension_manager.unload_extension("ollama_magic")  # a restart: a new session reads the disk
    ip.extension_manager.load_extension("ollama_magic")
    assert len(history(ip)) == 2
    ip.user_ns["__session__"] = str(tmp_path / "other.ipynb")
    assert history(ip).empty
    assert "other.ipynb" in ip.run_line_magic("ollama", "status")
    ip.user_ns["__session__"] = str(tmp_path / "analysis.ipynb")
    assert len(history(ip)) == 2


def test_history_export_and_reset(ip, tmp_path: Path) -> None:
    reply = chat(ip, SHORT, "Hello there.")
    md = tmp_path / "chat.md"
    ip.run_line_magic("ollama", f"history --export {md}")
    assert "Hello there." in md.read_text() and str(reply).strip()[:10] in md.read_text()
    js = tmp_path / "chat.json"
    ip.run_line_magic("ollama", f"history --export {js}")
    assert [m["role"] for m in json.loads(js.read_text())["messages"]] == ["user", "assistant"]
    transcript = ip.run_line_magic("ollama", "history")
    assert "Hello there." in transcript._repr_markdown_()
    chat(ip, f"-t other {SHORT}", "x")
    ip.run_line_magic("ollama", "reset")
    assert history(ip).empty and len(history(ip, "other")) == 2
    ip.run_line_magic("ollama", "reset --all")
    assert ip.run_line_magic("ollama", "threads").empty


def test_context_guard_leaves_out_old_turns_and_says_so(ip, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(4):
        chat(ip, SHORT, f"Fact {i}: " + "the quick brown fox jumps over the lazy dog. " * 12)
    from ollama_magic.notebook import current_session

    engine = current_session().backend
    real, calls = engine.chat, []
    monkeypatch.setattr(engine, "chat", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    with capture_output() as cap:
        reply = chat(ip, SHORT + " --options '{\"num_ctx\": 512}'", "Summarise.")
    assert len(calls) == 1 and not calls[0].get("debug_render_only")  # one render of the prompt: no pre-flight
    assert "left out the" in cap.stderr and "oldest message" in cap.stderr and "512-token context" in cap.stderr
    assert reply.stats["prompt_eval_count"] < 512
    assert len(history(ip)) == 10  # nothing is deleted from the history


def test_embed_list_column_cell_and_wide(ip) -> None:
    frame = ip.run_line_magic("embed", "['a cat', 'a dog', 'a cat']")
    assert list(frame.text) == ["a cat", "a dog", "a cat"] and frame.embedding[0].shape == (384,)
    assert (frame.embedding[0] == frame.embedding[2]).all()
    ip.user_ns["df"] = pd.DataFrame({"review": ["great", "awful"], "stars": [5, 1]}, index=["r1", "r2"])
    by_column = ip.run_line_magic("embed", "-o vecs df['review']")
    assert list(by_column.index) == ["r1", "r2"] and ip.user_ns["vecs"] is by_column
    assert list(ip.run_line_magic("embed", "-c review df").index) == ["r1", "r2"]
    wide = ip.run_line_magic("embed", "--wide df.review")
    assert wide.shape == (2, 385) and "e383" in wide.columns
    cell = ip.run_cell_magic("embed", "", "first line\n\n  second line  \n")
    assert list(cell.text) == ["first line", "second line"]
    with pytest.raises(UsageError, match="cannot evaluate"):
        ip.run_line_magic("embed", "undefined_name")
    with pytest.raises(UsageError, match="not a str"):
        ip.run_line_magic("embed", "[1, 2]")


def test_ollama_model_management(ip, tmp_path: Path) -> None:
    assert {GEMMA, "all-minilm:latest"} <= set(ip.run_line_magic("ollama", "list").name)
    shown = ip.run_line_magic("ollama", "show gemma3:270m")
    assert shown.loc[("Model", "architecture"), "value"] == "gemma3"
    assert "<start_of_turn>" in ip.run_line_magic("ollama", "show gemma3:270m --template")
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("FROM gemma3:270m\nSYSTEM You are terse.\nPARAMETER temperature 0.2\n")
    assert ip.run_line_magic("ollama", f"create terse -f {modelfile}") == "created terse"
    assert ip.run_line_magic("ollama", "show terse --system") == "You are terse."
    write_tiny_gguf(tmp_path / "mmproj.gguf", arch="clip")  # a projector FROM line, relative to the Modelfile
    modelfile.write_text("FROM gemma3:270m\nFROM ./mmproj.gguf\n")
    ip.run_line_magic("ollama", f"create seeing -f {modelfile}")
    assert ip.run_line_magic("ollama", "show seeing --modelfile").count("\nFROM ") == 2
    ip.run_line_magic("ollama", "rm seeing")
    ip.run_line_magic("ollama", "cp terse terse2")
    ip.run_line_magic("ollama", "create terse3 --from terse2 --system 'Be kind.'")
    assert {"terse:latest", "terse2:latest", "terse3:latest"} <= set(ip.run_line_magic("ollama", "list").name)
    ip.run_line_magic("ollama", "rm terse terse2 terse3")
    assert not {"terse:latest", "terse2:latest"} & set(ip.run_line_magic("ollama", "list").name)
    ip.run_line_magic("ollama", "load gemma3:270m --keep-alive 10m")
    assert list(ip.run_line_magic("ollama", "ps").name) == [GEMMA]
    assert ip.run_line_magic("ollama", "unload gemma3:270m") == "unloaded gemma3:270m"
    assert ip.run_line_magic("ollama", "ps").empty
    with pytest.raises(UsageError, match="unknown verb"):
        ip.run_line_magic("ollama", "frobnicate")
    with pytest.raises(UsageError, match='model "nope" not found'):
        ip.run_line_magic("ollama", "use nope")
    assert "create" in ip.run_line_magic("ollama", "help")


def test_use_sets_the_default_chat_model(ip) -> None:
    ip.run_line_magic("ollama", "cp gemma3:270m mine")
    try:
        ip.run_line_magic("ollama", "use mine")
        assert chat(ip, SHORT, "Hi").model == "mine:latest"
        assert "chat model:   mine:latest" in ip.run_line_magic("ollama", "status")
    finally:
        ip.run_line_magic("ollama", "rm mine")


def test_serve_from_the_kernel_and_connect_to_it(ip) -> None:
    url = ip.run_line_magic("ollama", "serve --port 0")
    assert url.startswith("http://127.0.0.1:")
    try:
        assert requests.get(url, timeout=10).text == "Ollama is running"
        assert "HTTP server:  http://127.0.0.1:" in ip.run_line_magic("ollama", "status")
        with pytest.raises(UsageError, match="no server answers at http://127.0.0.1:9"):
            ip.run_line_magic("ollama", "connect http://127.0.0.1:9")
        said = ip.run_line_magic("ollama", "connect " + url)  # no flag: it answers /api/version, so Ollama's API
        assert said.startswith(f"connected to {url} (version ")
        with pytest.raises(UsageError, match="disconnect first"):
            ip.run_line_magic("ollama", "serve --port 0")
        assert "remote" in ip.run_line_magic("ollama", "status")
    finally:
        ip.run_line_magic("ollama", "disconnect")
        assert ip.run_line_magic("ollama", "stop-server") == "server stopped"
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)


@pytest.fixture(scope="module")
def remote_url(tmp_path_factory: pytest.TempPathFactory, clone_registered, serve_process):
    """``ollama-magic serve`` in its own process, on its own store: the "bigger machine"."""
    served = serve_process(clone_registered(tmp_path_factory.mktemp("remote") / "models").root)
    yield served.url
    served.proc.terminate()
    served.proc.wait(timeout=30)


def test_every_magic_drives_a_remote_server(ip, remote_url: str, gemma_blob: Path, tmp_path: Path) -> None:
    ip.run_line_magic("ollama", f"connect {remote_url}")
    try:
        assert f"remote {remote_url}" in ip.run_line_magic("ollama", "status")
        first = chat(ip, SHORT, "My name is Ada.")
        second = chat(ip, SHORT, "What is my name?")
        assert first.stats["eval_count"] == 8 and second.stats["prompt_eval_count"] > first.stats["prompt_eval_count"]
        assert len(history(ip)) == 4  # the notebook's context stays in the notebook
        assert list(ip.run_line_magic("ollama", "ps").name) == [GEMMA]  # loaded over there
        assert ip.run_line_magic("ollama", "unload gemma3:270m") == "unloaded gemma3:270m"
        frame = ip.run_line_magic("embed", "['one', 'two']")
        assert frame.embedding[0].shape == (384,)
        gguf = tmp_path / "weights.gguf"
        gguf.symlink_to(gemma_blob)
        ip.run_line_magic("ollama", f"create uploaded --from {gguf}")  # uploaded as a blob, then created
        assert "uploaded:latest" in set(ip.run_line_magic("ollama", "list").name)
        ip.run_line_magic("ollama", "rm uploaded")
        with pytest.raises(UsageError, match='model "nope" not found'):
            chat(ip, "-m nope", "hi")
    finally:
        assert ip.run_line_magic("ollama", "disconnect") == "back to the in-kernel engine"
    assert "uploaded:latest" not in set(ip.run_line_magic("ollama", "list").name)


def test_tab_completion_offers_verbs_and_model_names(ip) -> None:
    _, verbs = ip.complete("", "%ollama sh")
    assert "show" in verbs
    _, names = ip.complete("", "%ollama show gem")
    assert GEMMA in names
    _, for_chat = ip.complete("", "%chat -m gem")
    assert GEMMA in for_chat


def test_text_format_and_help(ip, capsys) -> None:
    reply = chat(ip, f"-f text {SHORT}", "Hi")
    assert reply._repr_markdown_() is None and reply.fmt == "text"  # shown as plain text
    assert chat(ip, "--help") is None
    assert "--no-history" in capsys.readouterr().out


def test_panel_verb_opens_the_widget_panels_on_the_same_session(ip) -> None:
    from ollama_magic.notebook.widgets import OllamaPanel

    shown = ip.run_line_magic("ollama", "panel")
    try:
        assert isinstance(shown, OllamaPanel)
        assert shown.session is ip.magics_manager.registry["OllamaMagics"].session
        titles = [shown.widget.get_title(i) for i in range(len(shown.widget.children))]
        assert titles == ["Models", "Running", "Create", "Chat", "Embeddings"]
    finally:
        shown.close()
