"""``logprobs``/``top_logprobs`` and two-phase structured outputs on the real Gemma 3 270M, through the
real ``ollama`` and ``openai`` clients, the HTTP API and the Engine; ``%%chat --logprobs``."""

from __future__ import annotations

import json
import math

import ollama
import openai
import pytest
import requests
from IPython.core.getipython import get_ipython
from IPython.testing.globalipapp import start_ipython
from IPython.utils.capture import capture_output

from ollama_magic import Engine
from ollama_magic.server import BackgroundServer

from .test_api_frontier import THINK_TEMPLATE

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"
THINKER = "thinker"
GREEDY = {"temperature": 0, "seed": 3, "num_predict": 12}
PROMPT = "The three primary colours are"
ASK = [{"role": "user", "content": "Name a fruit."}]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, clone_registered):
    store = clone_registered(tmp_path_factory.mktemp("logprobs") / "models")
    with Engine(store) as engine:
        engine.create(THINKER, from_=GEMMA, template=THINK_TEMPLATE)
        yield engine


@pytest.fixture(scope="module")
def server(engine: Engine):
    with BackgroundServer(engine, port=0) as srv:
        yield srv


def check_greedy(entries, top: int) -> None:
    """Greedy: each chosen token is the likeliest of its list; the list is sorted and sums to <= 1."""
    assert entries
    for entry in entries:
        alts = entry.top_logprobs
        assert len(alts) == top
        values = [a.logprob for a in alts]
        assert values == sorted(values, reverse=True)
        assert entry.logprob == pytest.approx(values[0], abs=1e-6) and entry.token == alts[0].token
        assert entry.logprob <= 0 and sum(math.exp(v) for v in values) <= 1 + 1e-6


# ---- native API through the ollama client ----------------------------------------------------------


def test_generate_logprobs_stream_and_not(client: ollama.Client) -> None:
    whole = client.generate(GEMMA, PROMPT, logprobs=True, top_logprobs=5, options=GREEDY)
    check_greedy(whole.logprobs, 5)
    assert len(whole.logprobs) == whole.eval_count
    assert "".join(e.token for e in whole.logprobs) == whole.response
    chunks = list(client.generate(GEMMA, PROMPT, logprobs=True, top_logprobs=5, options=GREEDY, stream=True))
    pieces = [c for c in chunks if not c.done]
    assert pieces and all(c.logprobs for c in pieces)  # every streamed chunk carries its tokens
    assert all("".join(e.token for e in c.logprobs) == c.response for c in pieces)
    streamed = [e for c in chunks for e in c.logprobs or []]
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [(e.token, round(e.logprob, 4)) for e in whole.logprobs]
    plain = client.generate(GEMMA, PROMPT, logprobs=True, options=GREEDY)
    assert [e.top_logprobs for e in plain.logprobs] == [None] * plain.eval_count  # top_logprobs 0: no lists
    assert client.generate(GEMMA, PROMPT, options=GREEDY).logprobs is None


def test_chat_logprobs_stream_and_not(client: ollama.Client) -> None:
    whole = client.chat(GEMMA, ASK, logprobs=True, top_logprobs=3, options=GREEDY)
    check_greedy(whole.logprobs, 3)
    assert len(whole.logprobs) == whole.eval_count
    chunks = list(client.chat(GEMMA, ASK, logprobs=True, top_logprobs=3, options=GREEDY, stream=True))
    assert all(c.logprobs for c in chunks if not c.done)
    assert [e.token for c in chunks for e in c.logprobs or []] == [e.token for e in whole.logprobs]


def test_sampled_tokens_report_the_models_own_probabilities(client: ollama.Client) -> None:
    """At temperature 1.5 the sampler picks unlikely tokens; their logprobs are still the raw model's."""
    hot = client.generate(GEMMA, PROMPT, logprobs=True, top_logprobs=20,
                          options={"temperature": 1.5, "top_k": 1000, "top_p": 1.0, "seed": 11, "num_predict": 24})
    assert len(hot.logprobs) == hot.eval_count
    for entry in hot.logprobs:
        assert entry.logprob <= entry.top_logprobs[0].logprob + 1e-6


def test_top_logprobs_outside_0_to_20_is_a_400(client: ollama.Client, server: BackgroundServer) -> None:
    for bad in (21, -1):
        with pytest.raises(ollama.ResponseError) as info:
            client.chat(GEMMA, ASK, logprobs=True, top_logprobs=bad)
        assert info.value.status_code == 400 and info.value.error == "top_logprobs must be between 0 and 20"
    r = requests.post(f"{server.url}/api/generate", json={"model": GEMMA, "prompt": "x", "top_logprobs": 99}, timeout=60)
    assert r.status_code == 400 and r.json() == {"error": "top_logprobs must be between 0 and 20"}


def test_a_token_held_back_by_a_stop_string_keeps_its_logprob(client: ollama.Client) -> None:
    """A stop string that the reply only starts: the token that started it is held back, then sent
    with the next one, and the list is what it is without the stop string."""
    free = client.generate(GEMMA, PROMPT, logprobs=True, options=GREEDY)
    k = next(i for i, e in enumerate(free.logprobs[2:-2], 2) if e.token.strip())
    stop = free.logprobs[k].token + "\u2603never"
    chunks = list(client.generate(GEMMA, PROMPT, logprobs=True, options={**GREEDY, "stop": [stop]}, stream=True))
    assert "".join(c.response for c in chunks) == free.response
    assert [e.token for c in chunks for e in c.logprobs or []] == [e.token for e in free.logprobs]
    carrying = next(c for c in chunks if free.logprobs[k].token in [e.token for e in c.logprobs or []])
    assert len(carrying.logprobs) >= 2  # released together with the token that ruled the stop out
    # a stop string that does match: its tokens go with it, and what is left is the reply's
    hit = free.logprobs[k].token + free.logprobs[k + 1].token
    if free.response.find(hit) == sum(len(e.token) for e in free.logprobs[:k]):
        cut = client.generate(GEMMA, PROMPT, logprobs=True, options={**GREEDY, "stop": [hit]})
        assert cut.response == "".join(e.token for e in free.logprobs[:k])
        assert [e.token for e in cut.logprobs] == [e.token for e in free.logprobs[:k]]


# ---- OpenAI's shapes through the openai client -----------------------------------------------------


def test_openai_chat_logprobs_stream_and_not(oai: openai.OpenAI) -> None:
    whole = oai.chat.completions.create(model=GEMMA, messages=ASK, logprobs=True, top_logprobs=4, temperature=0,
                                        seed=3, max_tokens=12)
    content = whole.choices[0].logprobs.content
    check_greedy(content, 4)
    assert len(content) == whole.usage.completion_tokens
    assert "".join(t.token for t in content) == whole.choices[0].message.content
    assert content[0].bytes == list(content[0].token.encode())
    chunks = list(oai.chat.completions.create(model=GEMMA, messages=ASK, logprobs=True, top_logprobs=4, temperature=0,
                                              seed=3, max_tokens=12, stream=True))
    streamed = [t.token for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert streamed == [t.token for t in content]
    plain = oai.chat.completions.create(model=GEMMA, messages=ASK, temperature=0, seed=3, max_tokens=4)
    assert plain.choices[0].logprobs is None


def test_openai_completions_legacy_logprobs(oai: openai.OpenAI) -> None:
    whole = oai.completions.create(model=GEMMA, prompt=PROMPT, logprobs=3, temperature=0, seed=3, max_tokens=12)
    lp = whole.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == whole.usage.completion_tokens
    assert "".join(lp.tokens) == whole.choices[0].text
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    for token, value, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 3 and max(top.values()) == pytest.approx(value, abs=1e-6) and token in top
    chunks = list(oai.completions.create(model=GEMMA, prompt=PROMPT, logprobs=3, temperature=0, seed=3,
                                         max_tokens=12, stream=True))
    offsets = [o for c in chunks if c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset]
    assert offsets == lp.text_offset


# ---- the Engine in the kernel ----------------------------------------------------------------------


def test_engine_logprobs_carry_bytes(engine: Engine) -> None:
    r = engine.generate(GEMMA, "Café au", logprobs=True, top_logprobs=2, options=GREEDY)
    assert len(r.logprobs) == r.eval_count
    for entry in r.logprobs:
        assert bytes(entry.bytes).decode("utf-8", errors="replace") == entry.token
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob


def test_both_remote_backends_hand_logprobs_back_in_ollamas_shape(server: BackgroundServer) -> None:
    """What ``%%chat --logprobs`` reads after ``%ollama connect``: the same entries through either API."""
    from ollama_magic.backends import RemoteBackend
    from ollama_magic.openai_backend import OpenAIBackend

    options = {"temperature": 0, "seed": 3, "num_predict": 8}
    native = RemoteBackend(server.url).chat(GEMMA, ASK, logprobs=True, top_logprobs=2, options=options)
    check_greedy(native.logprobs, 2)
    via_openai = OpenAIBackend(f"{server.url}/v1").chat(GEMMA, ASK, logprobs=True, top_logprobs=2, options=options)
    assert [(e.token, round(e.logprob, 4)) for e in via_openai.logprobs] == \
        [(e.token, round(e.logprob, 4)) for e in native.logprobs]
    streamed = OpenAIBackend(f"{server.url}/v1").chat(GEMMA, ASK, logprobs=True, options=options, stream=True)
    assert [e.token for c in streamed for e in c.logprobs or []] == [e.token for e in native.logprobs]


# ---- thinking, then a grammar ----------------------------------------------------------------------

CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}
#: a few turns whose traces are closed, so the base model closes its own, then answers
FEW_SHOT = [
    {"role": "user", "content": "Which city is the capital of Italy?"},
    {"role": "assistant", "thinking": "Italy's capital is Rome.", "content": '{"city": "Rome"}'},
    {"role": "user", "content": "Which city is the capital of Spain?"},
    {"role": "assistant", "thinking": "Spain's capital is Madrid.", "content": '{"city": "Madrid"}'},
    {"role": "user", "content": "Which city is the capital of France?"},
]


def test_format_with_thinking_constrains_only_the_answer(client: ollama.Client) -> None:
    r = client.chat(THINKER, FEW_SHOT, format=CITY, think=True, options={"temperature": 0, "seed": 1, "num_predict": 80})
    assert r.message.thinking and "{" not in r.message.thinking  # the trace was free text, not JSON
    assert set(json.loads(r.message.content)) == {"city"}
    chunks = list(client.chat(THINKER, FEW_SHOT, format=CITY, think=True, stream=True,
                              options={"temperature": 0, "seed": 1, "num_predict": 80}))
    assert "".join(c.message.thinking or "" for c in chunks) == r.message.thinking
    assert "".join(c.message.content for c in chunks) == r.message.content
    off = client.chat(THINKER, FEW_SHOT, format=CITY, think=False, options={"temperature": 0, "seed": 1, "num_predict": 40})
    assert off.message.thinking is None and set(json.loads(off.message.content)) == {"city"}


# ---- %%chat --logprobs ---------------------------------------------------------------------------


@pytest.fixture
def ip(engine: Engine, tmp_path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OLLAMA_MODELS", str(engine.store.root))
    monkeypatch.setenv("OLLAMA_MAGIC_CONVERSATIONS", str(tmp_path / "conversations"))
    shell = start_ipython() or get_ipython()
    shell.user_ns["__session__"] = str(tmp_path / "logprobs.ipynb")
    shell.extension_manager.load_extension("ollama_magic")
    yield shell
    shell.extension_manager.unload_extension("ollama_magic")


def test_chat_logprobs_gives_a_dataframe_of_the_replys_tokens(ip) -> None:
    with capture_output():
        reply = ip.run_cell_magic("chat", "-m gemma3:270m --logprobs 3 --seed 3 --temperature 0 --num-predict 10",
                                  "Name a fruit.")
    frame = reply.logprobs
    assert list(frame.columns) == ["token", "logprob", "probability", "top"]
    assert len(frame) == reply.stats["eval_count"] and "".join(frame.token) == str(reply)
    assert ((frame.probability > 0) & (frame.probability <= 1)).all()
    assert all(len(top) == 3 and top[0][1] == pytest.approx(p) for top, p in zip(frame.top, frame.probability))
    with capture_output():
        plain = ip.run_cell_magic("chat", "-m gemma3:270m --seed 3 --temperature 0 --num-predict 4", "Hi")
    assert plain.logprobs is None
