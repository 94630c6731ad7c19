"""Fitting a request into its context on the real model, as Ollama does: a long chat loses its oldest
turns (never the system message), ``truncate: false`` is Ollama's 400, a generate prompt longer than
the context keeps its start and end with room to answer, generation past ``num_ctx`` shifts the
context (``shift: false`` stops with "length"), and the notebook's guard says what the engine will
leave out, counted with the model's tokenizer. Through the HTTP API, the ``ollama`` client, the
in-kernel Engine and ``%%chat``."""

from __future__ import annotations

import re
from pathlib import Path

import ollama
import pytest
import requests
from IPython.core.getipython import get_ipython
from IPython.testing.globalipapp import start_ipython
from IPython.utils.capture import capture_output

from ollama_magic import Engine
from ollama_magic.backends import RemoteBackend
from ollama_magic.errors import InvalidRequest
from ollama_magic.notebook.context_fit import estimate_tokens, guard_thread
from ollama_magic.server import BackgroundServer

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"
SMALL = "gemma-256"  # Gemma with PARAMETER num_ctx 256 in its Modelfile
NUM_CTX = 256
#: A grammar that cannot end before 400 numbers, so the reply's length is num_predict's, not the model's
NUMBERS = {"type": "array", "items": {"type": "integer"}, "minItems": 400}
OPTS = {"num_ctx": NUM_CTX, "num_predict": 8, "temperature": 0, "seed": 1}
SYSTEM = "You are Zorblax, the librarian of the moon base. Sign every answer as Zorblax."
TOO_LONG = "the input length exceeds the context length"
SHIFT_CTX = 64
COUNT = "1, 1, 1, 1, 1, 1, 1, 1, 1, 1,"


def long_chat(turns: int = 8) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": SYSTEM}]
    for i in range(turns):
        messages += [{"role": "user", "content": f"Fact {i}: " + "the quick brown fox jumps over the lazy dog. " * 5},
                     {"role": "assistant", "content": f"Noted fact {i}."}]
    return [*messages, {"role": "user", "content": "Who are you?"}]


@pytest.fixture(scope="module")
def models_root(tmp_path_factory: pytest.TempPathFactory, clone_registered) -> Path:
    return clone_registered(tmp_path_factory.mktemp("context") / "models").root


@pytest.fixture(scope="module")
def engine(models_root: Path):
    from ollama_magic.store import ModelStore

    with Engine(ModelStore(models_root)) as engine:
        engine.create(SMALL, from_=GEMMA, parameters={"num_ctx": NUM_CTX})
        yield engine


@pytest.fixture(scope="module")
def server(engine: Engine):
    with BackgroundServer(engine, port=0) as srv:
        yield srv


def post(server: BackgroundServer, path: str, body: dict) -> dict:
    response = requests.post(f"{server.url}{path}", json={"stream": False, **body}, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


# ---- truncate: a chat leaves out its oldest turns --------------------------------------------------


def test_a_long_chat_leaves_out_its_oldest_turns_and_the_model_still_reads_the_system_message(
        client: ollama.Client, server: BackgroundServer) -> None:
    messages = long_chat()
    reply = client.chat(GEMMA, messages, format=NUMBERS, options=OPTS)
    # before: the prompt was cut to num_ctx - 1 tokens in its middle, which left room for one token
    assert reply.eval_count == 8 and reply.done_reason == "length"
    assert reply.prompt_eval_count <= NUM_CTX - 8  # room for the answer (num_predict)

    raw = post(server, "/api/chat", {"model": GEMMA, "messages": messages, "format": NUMBERS, "options": OPTS})
    dropped = raw["dropped_messages"]
    assert dropped > 0 and dropped % 2 == 0  # whole turns: a question with its answer
    shown = post(server, "/api/chat", {"model": GEMMA, "messages": messages, "format": NUMBERS, "options": OPTS,
                                       "_debug_render_only": True})["_debug_info"]
    text = shown["rendered_template"]
    assert text.startswith(f"<start_of_turn>user\n{SYSTEM}<end_of_turn>")  # the system message is read first
    assert "Fact 0:" not in text and f"Fact {dropped // 2 - 1}:" not in text and f"Fact {dropped // 2}:" in text
    assert text.endswith("Who are you?<end_of_turn>\n<start_of_turn>model\n")
    assert shown["context_fit"] == {"num_ctx": NUM_CTX, "dropped_messages": dropped,
                                    "prompt_tokens": reply.prompt_eval_count}
    tokens = post(server, "/api/tokenize", {"model": GEMMA, "content": text})["tokens"]
    assert reply.prompt_eval_count == len(tokens) + 1  # the model read exactly that prompt, and its BOS


def test_a_chat_that_fits_is_sent_whole(client: ollama.Client, server: BackgroundServer) -> None:
    messages = long_chat(turns=1)
    raw = post(server, "/api/chat", {"model": GEMMA, "messages": messages, "format": NUMBERS, "options": OPTS})
    assert "dropped_messages" not in raw and raw["eval_count"] == 8
    shown = post(server, "/api/chat", {"model": GEMMA, "messages": messages, "options": OPTS,
                                       "_debug_render_only": True})["_debug_info"]
    assert "Fact 0:" in shown["rendered_template"] and shown["context_fit"]["dropped_messages"] == 0


def test_truncate_false_refuses_a_prompt_that_does_not_fit_with_ollamas_400(server: BackgroundServer,
                                                                            engine: Engine) -> None:
    body = {"model": GEMMA, "messages": long_chat(), "options": OPTS, "truncate": False}
    refused = requests.post(f"{server.url}/api/chat", json=body, timeout=120)  # streaming: refused before it starts
    assert refused.status_code == 400 and refused.json() == {"error": TOO_LONG}
    prompt = "the quick brown fox jumps over the lazy dog. " * 40
    refused = requests.post(f"{server.url}/api/generate", timeout=120, json={
        "model": GEMMA, "prompt": prompt, "options": OPTS, "truncate": False, "stream": False})
    assert refused.status_code == 400 and refused.json() == {"error": TOO_LONG}
    with pytest.raises(InvalidRequest, match=f"^{TOO_LONG}$"):
        engine.chat(GEMMA, long_chat(), options=OPTS, truncate=False)
    fits = post(server, "/api/chat", {"model": GEMMA, "messages": long_chat(turns=1), "format": NUMBERS,
                                      "options": OPTS, "truncate": False})
    assert fits["eval_count"] == 8


def test_a_generate_prompt_longer_than_the_context_keeps_its_start_and_end_and_room_to_answer(
        client: ollama.Client) -> None:
    prompt = "Chapter one. " + "The rain fell on the old town. " * 80 + "Now list some numbers."
    reply = client.generate(GEMMA, prompt, format=NUMBERS, options=OPTS)
    keep = 4 + 1  # num_keep and the BOS token, as Ollama counts them
    assert reply.prompt_eval_count == NUM_CTX - (NUM_CTX - keep) // 2  # half the rest is left for the answer
    assert reply.eval_count == 8  # before: one token


# ---- shift: generation past num_ctx -----------------------------------------------------------------


def test_generation_past_num_ctx_shifts_the_context_and_shift_false_stops_at_length(
        client: ollama.Client, server: BackgroundServer, engine: Engine) -> None:
    """A greedy count that never ends by itself, in a 64-token context: each shift keeps BOS and
    num_keep and drops half of the rest, and the count goes on."""
    opts = {"num_ctx": SHIFT_CTX, "num_predict": 100, "temperature": 0, "seed": 1}
    shifted = client.generate(GEMMA, COUNT, raw=True, options=opts)
    assert shifted.done_reason == "length" and shifted.eval_count == 100  # before: it stopped at num_ctx
    assert shifted.prompt_eval_count + shifted.eval_count > 2 * SHIFT_CTX  # several shifts
    assert set(shifted.response.replace(",", " ").split()) == {"1"}  # still counting after them
    stopped = post(server, "/api/generate", {"model": GEMMA, "prompt": COUNT, "raw": True, "options": opts,
                                             "shift": False})
    assert stopped["done_reason"] == "length"
    assert stopped["prompt_eval_count"] + stopped["eval_count"] == SHIFT_CTX + 1  # the last token is not fed back

    # chat: a prompt that leaves 4 free cells (a digit is a token), a reply the grammar keeps going
    probe = engine.fit_context(GEMMA, [{"role": "user", "content": "Numbers: " + "7" * 40}], options=opts)
    message = [{"role": "user", "content": "Numbers: " + "7" * (40 + SHIFT_CTX - 4 - probe.prompt_tokens)}]
    chat_opts = dict(opts, num_predict=8)
    cut = engine.chat(GEMMA, message, format=NUMBERS, options=chat_opts, shift=False)
    assert cut.prompt_eval_count == SHIFT_CTX - 4 and cut.done_reason == "length" and cut.eval_count == 5
    assert engine.chat(GEMMA, message, format=NUMBERS, options=chat_opts).eval_count == 8


# ---- the notebook's guard ----------------------------------------------------------------------------

#: Text whose tokens the old chars/3 guess undercounts three times: Gemma reads a digit a token.
DIGITS = "31415926535897932384626433832795028841971693993751" * 3


def digits_thread(turns: int = 3) -> list[dict[str, str]]:
    messages: list[dict[str, str]] = []
    for i in range(turns):
        messages += [{"role": "user", "content": f"Remember {DIGITS}"}, {"role": "assistant", "content": f"Done {i}."}]
    return [*messages, {"role": "user", "content": "What did I say?"}]


def test_the_notebook_guard_counts_with_the_models_tokenizer(engine: Engine, server: BackgroundServer) -> None:
    thread = digits_thread()
    options = dict(OPTS)
    assert estimate_tokens(thread) <= NUM_CTX - 8  # the old guess: everything fits
    guarded = guard_thread(engine, GEMMA, thread, options, format=NUMBERS)
    reply = engine.chat(GEMMA, guarded.messages, format=NUMBERS, options=options)
    assert not guarded.estimated and guarded.fit.dropped_messages == reply.dropped_messages > 0
    assert reply.eval_count == 8 and reply.prompt_eval_count <= NUM_CTX - 8
    remote = guard_thread(RemoteBackend(server.url), GEMMA, thread, options, format=NUMBERS)
    assert not remote.estimated and remote.fit == guarded.fit  # an ollama-magic server says the same


@pytest.fixture
def ip(models_root: Path, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OLLAMA_MODELS", str(models_root))
    monkeypatch.setenv("OLLAMA_MAGIC_CONVERSATIONS", str(tmp_path / "conversations"))
    shell = start_ipython() or get_ipython()
    shell.user_ns["__session__"] = str(tmp_path / "context.ipynb")
    shell.extension_manager.load_extension("ollama_magic")
    yield shell
    shell.extension_manager.unload_extension("ollama_magic")


def test_chat_magic_says_what_a_modelfile_num_ctx_leaves_out(ip) -> None:
    """The model's own num_ctx (its Modelfile), not the 4096 the old guard assumed."""
    for i in range(4):
        ip.run_cell_magic("chat", f"-m {GEMMA} --seed 1 --num-predict 4", f"Fact {i}: " + "the lazy dog sleeps. " * 12)
    with capture_output() as cap:
        reply = ip.run_cell_magic("chat", f"-m {SMALL} --seed 1 --num-predict 4", "Summarise.")
    notice = re.search(r"left out the (\d+) oldest message\(s\) of thread 'main' to fit the 256-token context", cap.stderr)
    assert notice, cap.stderr
    assert int(notice.group(1)) % 2 == 0 and reply.stats["prompt_eval_count"] <= NUM_CTX
    assert len(ip.run_line_magic("ollama", "history --df")) == 10  # nothing is deleted from the history
