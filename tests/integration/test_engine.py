"""The in-kernel engine on the real Gemma 3 270M and all-MiniLM-L6-v2 models, with Ollama's semantics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import ollama
import pytest

from ollama_magic import Engine
from ollama_magic.errors import InvalidRequest, ModelNotFound
from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"
FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.fixture(scope="module")
def engine(registered: ModelStore) -> Engine:
    with Engine(registered) as engine:
        yield engine


def ask(engine: Engine, prompt: str = "Why is the sky blue?", **options) -> ollama.GenerateResponse:
    options.setdefault("num_predict", 24)
    return engine.generate(GEMMA, prompt, options=options)


def test_generate_returns_ollama_response_with_plausible_stats(engine: Engine) -> None:
    r = ask(engine, seed=1)
    assert isinstance(r, ollama.GenerateResponse)
    assert r.done is True and r.done_reason in ("stop", "length")
    assert r.response and isinstance(r.response, str)
    assert 0 < r.prompt_eval_count < 40
    assert 0 < r.eval_count <= 24
    assert r.total_duration >= r.prompt_eval_duration + r.eval_duration > 0
    assert r.created_at.endswith("Z")
    assert r.context and len(r.context) == r.prompt_eval_count + r.eval_count


def test_same_seed_gives_the_same_text_even_across_reload(engine: Engine) -> None:
    first = ask(engine, seed=42, temperature=0.9).response
    assert ask(engine, seed=42, temperature=0.9).response == first
    engine.unload(GEMMA)
    assert ask(engine, seed=42, temperature=0.9).response == first


def test_seed_document_sampling_example_is_reproducible(engine: Engine) -> None:
    """The seed document's example: temperature 12.3, top_p 0.85, top_k 20 with a fixed seed."""
    opts = dict(seed=123, temperature=12.3, top_p=0.85, top_k=20, num_predict=20)
    runs = {ask(engine, "你是谁?", **opts).response for _ in range(2)}
    assert len(runs) == 1


def test_without_a_seed_outputs_vary_like_ollama(engine: Engine) -> None:
    runs = {ask(engine, temperature=1.0, num_predict=16).response for _ in range(4)}
    assert len(runs) > 1


def test_temperature_zero_is_greedy(engine: Engine) -> None:
    assert ask(engine, temperature=0, seed=1).response == ask(engine, temperature=0, seed=999).response


def test_num_predict_caps_tokens_and_reports_length(engine: Engine) -> None:
    r = ask(engine, num_predict=5, seed=3, stop=[])
    assert r.eval_count == 5 and r.done_reason == "length"


def test_stop_strings_never_appear_in_the_output(engine: Engine) -> None:
    free = ask(engine, seed=7, temperature=0, num_predict=40).response
    word = next(w for w in free.split() if len(w) > 2)
    stopped = ask(engine, seed=7, temperature=0, num_predict=40, stop=[word])
    assert word not in stopped.response
    assert stopped.done_reason == "stop"
    assert free.startswith(stopped.response)
    streamed = "".join(c.response for c in engine.generate(GEMMA, "Why is the sky blue?", stream=True,
                                                           options=dict(seed=7, temperature=0, num_predict=40, stop=[word])))
    assert streamed == stopped.response


def test_stream_yields_chunks_then_one_final_chunk(engine: Engine) -> None:
    chunks = list(engine.chat(GEMMA, [{"role": "user", "content": "Hello"}], stream=True, options={"num_predict": 10, "seed": 2}))
    assert all(not c.done for c in chunks[:-1]) and chunks[-1].done
    assert len(chunks) >= 3
    assert chunks[-1].eval_count >= len(chunks) - 1 - 1
    assert chunks[-1].message.role == "assistant"
    whole = engine.chat(GEMMA, [{"role": "user", "content": "Hello"}], options={"num_predict": 10, "seed": 2})
    assert "".join(c.message.content for c in chunks) == whole.message.content


def test_system_and_history_change_the_prompt(engine: Engine) -> None:
    base = engine.chat(GEMMA, [{"role": "user", "content": "Hi"}], options={"num_predict": 1})
    with_system = engine.chat(GEMMA, [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Hi"}], options={"num_predict": 1})
    history = engine.chat(GEMMA, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there!"},
                                  {"role": "user", "content": "Hi"}], options={"num_predict": 1})
    assert with_system.prompt_eval_count > base.prompt_eval_count
    assert history.prompt_eval_count > base.prompt_eval_count
    gen_sys = engine.generate(GEMMA, "Hi", system="You are a pirate.", options={"num_predict": 1})
    assert gen_sys.prompt_eval_count == with_system.prompt_eval_count


def test_json_format_yields_valid_json(engine: Engine) -> None:
    r = engine.generate(GEMMA, "Give me a JSON object with keys name and color for a cat.", format="json",
                        options={"seed": 5, "num_predict": 200, "temperature": 0, "repeat_penalty": 1.3})
    assert r.done_reason == "stop"
    assert isinstance(json.loads(r.response), dict)


def test_schema_format_yields_json_valid_against_it(engine: Engine) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    r = engine.chat(GEMMA, [{"role": "user", "content": "Invent a person."}], format=schema,
                    options={"seed": 5, "num_predict": 200, "temperature": 0})
    data = json.loads(r.message.content)
    assert set(data) == {"name", "age"}
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


def test_invalid_schema_is_a_clear_error_not_a_crash(engine: Engine) -> None:
    with pytest.raises(InvalidRequest):
        engine.generate(GEMMA, "x", format={"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}})
    assert ask(engine, num_predict=2).done  # the model is still healthy


def test_early_close_of_a_stream_stops_decoding(engine: Engine) -> None:
    ask(engine, num_predict=1)
    [entry] = [e for e in engine.scheduler.loaded() if e.name == GEMMA and not e.key[1]]
    before = entry.runner.tokens_decoded
    stream = engine.generate(GEMMA, "Write a long story.", stream=True, options={"num_predict": 400, "seed": 1, "stop": []})
    for i, _chunk in enumerate(stream):
        if i == 2:
            break
    stream.close()
    decoded = entry.runner.call(lambda: entry.runner.tokens_decoded) - before
    assert decoded < 60  # prompt + a few tokens, not 400
    assert entry.active == 0


def test_unknown_model_and_bad_options(engine: Engine) -> None:
    with pytest.raises(ModelNotFound, match='model "nope:latest" not found|model "nope" not found'):
        engine.generate("nope", "hi")
    with pytest.raises(InvalidRequest, match="temperature"):
        engine.generate(GEMMA, "hi", options={"temperature": "hot"})
    # unknown keys are ignored, as Ollama does
    assert engine.generate(GEMMA, "hi", options={"num_predict": 1, "not_an_option": 1}).done


def test_embedding_model_refuses_generate(engine: Engine) -> None:
    with pytest.raises(InvalidRequest, match="does not support generate"):
        engine.generate("all-minilm", "hi")


def test_minilm_embeddings_match_sentence_transformers(engine: Engine) -> None:
    ref = json.loads((FIXTURES / "minilm_reference.json").read_text())
    r = engine.embed("all-minilm", ref["texts"])
    assert isinstance(r, ollama.EmbedResponse)
    assert len(r.embeddings) == len(ref["texts"])
    for ours, theirs in zip(r.embeddings, ref["vectors"]):
        assert len(ours) == 384
        assert math.isclose(math.sqrt(sum(x * x for x in ours)), 1.0, rel_tol=1e-4)
        cosine = sum(a * b for a, b in zip(ours, theirs))
        assert cosine >= 0.999
    assert r.prompt_eval_count > len(ref["texts"])


def test_embed_string_truncate_dimensions_and_legacy(engine: Engine) -> None:
    one = engine.embed("all-minilm", "hello world")
    assert len(one.embeddings) == 1
    short = engine.embed("all-minilm", "hello world", dimensions=8).embeddings[0]
    assert len(short) == 8 and math.isclose(sum(x * x for x in short), 1.0, rel_tol=1e-4)
    legacy = engine.embeddings("all-minilm", "hello world").embedding
    norm = math.sqrt(sum(x * x for x in legacy))
    assert norm > 1.5  # not normalised, as Ollama's /api/embeddings
    assert sum(a * b / norm for a, b in zip(legacy, one.embeddings[0])) > 0.9999
    long_text = "word " * 2000
    with pytest.raises(InvalidRequest, match="exceeds the context length"):
        engine.embed("all-minilm", long_text, truncate=False)
    assert len(engine.embed("all-minilm", long_text).embeddings[0]) == 384
    assert engine.embed("all-minilm", []).embeddings == []


def test_generative_model_embeds_pooled(engine: Engine) -> None:
    r = engine.embed(GEMMA, ["a", "b"])
    assert len(r.embeddings) == 2 and len(r.embeddings[0]) == 640


def test_two_models_loaded_at_once_and_keep_alive_zero_unloads(registered: ModelStore) -> None:
    with Engine(registered) as engine:
        engine.generate(GEMMA, "hi", options={"num_predict": 1})
        engine.embed("all-minilm", "hi")
        ps = engine.ps()
        assert isinstance(ps, ollama.ProcessResponse)
        assert {m.name for m in ps.models} == {GEMMA, "all-minilm:latest"}
        gemma = next(m for m in ps.models if m.name == GEMMA)
        assert gemma.size > gemma.size_vram == 0 and gemma.context_length == 4096
        assert gemma.details.family == "gemma3"

        r = engine.generate(GEMMA, "hi", keep_alive=0, options={"num_predict": 1})
        assert r.done
        assert {m.name for m in engine.ps().models} == {"all-minilm:latest"}
        unloaded = engine.embed("all-minilm", "x", keep_alive=0)
        assert unloaded.embeddings and engine.ps().models == []


def test_empty_prompt_loads_and_keep_alive_zero_unloads(registered: ModelStore) -> None:
    with Engine(registered) as engine:
        loaded = engine.generate(GEMMA, "")
        assert loaded.done_reason == "load" and loaded.response == ""
        assert [m.name for m in engine.ps().models] == [GEMMA]
        unloaded = engine.chat(GEMMA, [], keep_alive=0)
        assert unloaded.done_reason == "unload"
        assert engine.ps().models == []


def test_lru_model_is_evicted_when_the_limit_is_reached(registered: ModelStore) -> None:
    with Engine(registered, max_loaded=1) as engine:
        engine.generate(GEMMA, "hi", options={"num_predict": 1})
        engine.embed("all-minilm", "hi")
        assert [m.name for m in engine.ps().models] == ["all-minilm:latest"]


def test_keep_alive_durations_are_reported_in_ps(registered: ModelStore) -> None:
    with Engine(registered) as engine:
        engine.generate(GEMMA, "", keep_alive="10m")
        [m] = engine.ps().models
        from datetime import datetime, timezone

        left = (m.expires_at - datetime.now(timezone.utc)).total_seconds()
        assert 590 < left <= 600
        engine.generate(GEMMA, "", keep_alive=-1)
        assert engine.ps().models[0].expires_at.year >= 2300
        with pytest.raises(InvalidRequest, match="keep_alive"):
            engine.generate(GEMMA, "", keep_alive="soon")
