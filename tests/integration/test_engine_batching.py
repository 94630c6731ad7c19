"""Several requests on one model at once (continuous batching) and the model lifecycle around them,
on the real Gemma 3 270M: parallel streams, cancels, unloads while streams run, seeds, queue limits."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import ollama
import pytest

from ollama_magic import Engine
from ollama_magic.engine.runner import EngineError, LoadOptions, Runner
from ollama_magic.engine.scheduler import LoadedStats
from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"


@pytest.fixture(scope="module")
def engine(registered: ModelStore) -> Iterator[Engine]:
    with Engine(registered) as engine:
        yield engine


def runner_of(engine: Engine) -> Runner:
    [entry] = [e for e in engine.scheduler.loaded() if e.name == GEMMA and not e.key.embedding]
    return entry.runner


def stats_of(engine: Engine) -> LoadedStats:
    [stats] = [s for s in engine.stats() if s.name == GEMMA and not s.embedding and not s.expiring]
    return stats


def stream(engine: Engine, prompt: str, n: int, **options) -> Iterator[ollama.GenerateResponse]:
    return engine.generate(GEMMA, prompt, stream=True, options={"num_predict": n, "stop": [], **options})


def last(chunks: Iterator[ollama.GenerateResponse]) -> tuple[str, ollama.GenerateResponse]:
    parts = []
    for chunk in chunks:
        parts.append(chunk.response)
    return "".join(parts), chunk


def test_four_streams_at_once_all_finish_with_their_own_stats(engine: Engine) -> None:
    prompts = [f"Tell me about the number {i}." for i in range(4)]
    streams = [stream(engine, p, 12 + 2 * i, temperature=0) for i, p in enumerate(prompts)]
    for s in streams:
        assert next(s).done is False  # all four are decoding before any has finished
    assert stats_of(engine).peak_active >= 4
    finals = [last(s)[1] for s in streams]
    for i, (prompt, fin) in enumerate(zip(prompts, finals)):
        assert fin.done and fin.done_reason == "length" and fin.eval_count == 12 + 2 * i
        assert fin.prompt_eval_count == engine.generate(GEMMA, prompt, options={"num_predict": 1}).prompt_eval_count
        assert fin.prompt_eval_duration > 0 and fin.eval_duration > 0
        assert fin.total_duration >= fin.prompt_eval_duration + fin.eval_duration
        assert len(fin.context) == fin.prompt_eval_count + fin.eval_count


def test_cancelling_one_of_four_streams_lets_the_others_finish(engine: Engine) -> None:
    streams = [stream(engine, f"Write a poem about {w}.", 16, temperature=0) for w in ("rain", "sun", "snow", "wind")]
    for s in streams:
        next(s)
    streams[1].close()
    finals = [last(s)[1] for i, s in enumerate(streams) if i != 1]
    # temperature 0 and no stop strings: each of the three runs to its limit, untouched by the cancel
    assert [(f.done, f.done_reason, f.eval_count) for f in finals] == [(True, "length", 16)] * 3
    assert engine.generate(GEMMA, "Hi", options={"num_predict": 2}).eval_count == 2


def test_unload_while_two_streams_run_frees_the_model_only_after_them(engine: Engine) -> None:
    a, b = stream(engine, "Count to one hundred.", 2000), stream(engine, "Name every colour.", 12)
    next(a), next(b)
    runner = runner_of(engine)
    assert engine.unload(GEMMA) is True  # returns at once: it does not wait for the streams
    assert GEMMA not in [m.model for m in engine.ps().models]  # and the scheduler is not frozen
    decoded = runner.tokens_decoded
    text, fin_b = last(b)
    assert fin_b.eval_count == 12 and not runner.closed  # b went on decoding on the expiring model
    assert runner.tokens_decoded > decoded
    a.cancel()
    fin_a = last(a)[1]
    assert fin_a.eval_count < 2000  # a was still running when the unload came back
    assert runner.closed  # freed once the last user let go
    assert engine.generate(GEMMA, "Hi", options={"num_predict": 2}).eval_count == 2  # a fresh load


def test_keep_alive_zero_during_a_stream_neither_waits_for_it_nor_frees_it(engine: Engine) -> None:
    long = stream(engine, "Tell me a very long story.", 2000)
    next(long)
    runner = runner_of(engine)
    short = engine.generate(GEMMA, "Hi", keep_alive=0, options={"num_predict": 3})
    assert short.eval_count == 3
    assert not runner.closed
    long.cancel()
    assert last(long)[1].eval_count < 2000
    assert runner.closed  # keep_alive 0 took effect when the stream ended


def test_a_job_cancelled_while_queued_still_finishes(engine: Engine) -> None:
    engine.generate(GEMMA, "Hi", options={"num_predict": 1})
    runner = runner_of(engine)
    busy = [stream(engine, f"Story {i}.", 2000) for i in range(runner.load_options.num_parallel)]
    for s in busy:
        next(s)
    queued = stream(engine, "I wait.", 5)
    pool = ThreadPoolExecutor(1)
    first = pool.submit(next, queued)  # waits for a slot in another thread
    while stats_of(engine).waiting == 0:  # bounded by the future's timeout below
        assert not first.done()
    queued.cancel()
    chunk = first.result(timeout=30)  # without the fix this waits forever
    assert chunk.done and chunk.done_reason == "cancelled" and chunk.eval_count == 0
    for s in busy:
        s.cancel()
        last(s)
    pool.shutdown()


def test_same_seed_same_text_alone_and_beside_three_other_streams(engine: Engine) -> None:
    seeded = {"seed": 42, "temperature": 0.9, "num_predict": 12, "stop": []}
    alone = engine.generate(GEMMA, "Describe a forest.", options=seeded).response
    others = [stream(engine, f"Describe city number {i}.", 16, temperature=1.0) for i in range(3)]
    for s in others:
        next(s)
    with ThreadPoolExecutor(1) as pool:
        beside = pool.submit(engine.generate, GEMMA, "Describe a forest.", options=seeded)
        finals = [last(s)[1] for s in others]
        assert beside.result(timeout=120).response == alone
    assert all(f.done for f in finals)


def test_turn_two_of_a_chat_decodes_only_its_new_tokens(engine: Engine) -> None:
    history = [{"role": "user", "content": "Tell me about whales and how they sleep in the ocean."}]
    first = engine.chat(GEMMA, history, options={"num_predict": 12, "temperature": 0})
    runner = runner_of(engine)
    history += [{"role": "assistant", "content": first.message.content}, {"role": "user", "content": "And dolphins?"}]
    before = runner.tokens_decoded
    second = engine.chat(GEMMA, history, options={"num_predict": 1, "temperature": 0})
    evaluated = runner.tokens_decoded - before
    assert evaluated < second.prompt_eval_count - first.prompt_eval_count + 4


def test_a_failed_load_raises_one_error_and_ends_its_thread(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    load = LoadOptions(num_ctx=256, num_batch=64, num_gpu=0, num_thread=1, use_mmap=True, num_parallel=2)
    with pytest.raises(EngineError, match="failed to load model broken"):
        Runner(bad, load, name="broken")
    assert not [t for t in threading.enumerate() if t.name == "ollama-magic-runner:broken"]


MINILM = "all-minilm"


def embed_runner_of(engine: Engine) -> Runner:
    [entry] = [e for e in engine.scheduler.loaded() if e.key.embedding]
    return entry.runner


def test_concurrent_embed_requests_share_packed_batches_and_keep_their_vectors(engine: Engine) -> None:
    requests = [[f"Note {i}: the {w} was fine." for w in ("delivery", "weather", "code")] for i in range(6)]
    alone = [engine.embed(MINILM, texts) for texts in requests]
    runner = embed_runner_of(engine)
    before = runner.embed_decodes
    for texts in requests:
        engine.embed(MINILM, texts)
    separate = runner.embed_decodes - before  # one decode each: three short texts fit one micro-batch
    # Hold the owner thread so the six requests are all queued when it looks again, as under load.
    holding, gate = threading.Event(), threading.Event()
    blocker = threading.Thread(target=runner.call, args=(lambda: (holding.set(), gate.wait(60)),))
    blocker.start()
    assert holding.wait(30)
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = [pool.submit(engine.embed, MINILM, texts) for texts in requests]
        deadline = time.monotonic() + 60
        while runner.waiting < len(requests):
            assert time.monotonic() < deadline, f"the embed requests never queued on the model: {runner.waiting}"
            time.sleep(0.01)
        gate.set()
        together = [f.result(timeout=60) for f in futures]
    blocker.join(timeout=30)
    shared = runner.embed_decodes - before - separate
    assert shared < separate, f"{shared} llama_decode calls together vs {separate} one request at a time"
    for one, both in zip(alone, together):
        assert both.prompt_eval_count == one.prompt_eval_count  # each request counts its own tokens
        a, b = np.array(one.embeddings), np.array(both.embeddings)
        assert a.shape == b.shape == (3, 384)
        assert (np.sum(a * b, axis=1) >= 0.9999).all()  # unit vectors: the dot product is the cosine


def test_a_request_while_its_model_is_unloading_is_served_by_the_loaded_runner(engine: Engine) -> None:
    running = stream(engine, "Count to one hundred.", 2000)
    next(running)
    runner = runner_of(engine)
    assert engine.unload(GEMMA)  # Gemma expires: still decoding, still in memory
    hi = engine.generate(GEMMA, "Hi", options={"num_predict": 1})
    assert hi.eval_count == 1 and hi.load_duration == 0  # no second copy loaded (Ollama's useLoadedRunner)
    assert runner_of(engine) is runner and GEMMA in [m.model for m in engine.ps().models]
    running.cancel()
    last(running)
    assert not runner.closed  # back in service: the unload was called off by the new request


def test_a_model_expiring_but_still_in_use_counts_in_the_memory_budget(registered: ModelStore) -> None:
    with Engine(registered) as engine:
        engine.embed(MINILM, "warm up")  # MiniLM loaded, idle
        running = stream(engine, "Count to one hundred.", 2000)
        next(running)  # Gemma loaded and busy
        gemma = runner_of(engine)
        [g_entry] = [e for e in engine.scheduler.loaded() if not e.key.embedding]
        [m_entry] = [e for e in engine.scheduler.loaded() if e.key.embedding]
        # room for what is loaded now and a second Gemma only once MiniLM is gone (the first Gemma, expiring
        # but still decoding, keeps its memory)
        second = engine.plan(GEMMA, {"num_ctx": 2048}).attrs["size"]
        engine.scheduler.budget = g_entry.size + m_entry.size + second - m_entry.size // 2
        assert engine.unload(GEMMA)  # Gemma expires: still decoding, still in memory
        # other load options: a second Gemma, while the first still holds its memory
        assert engine.generate(GEMMA, "Hi", options={"num_predict": 1, "num_ctx": 2048}).eval_count == 1
        loaded = [(e.name, e.key.embedding) for e in engine.scheduler.loaded()]
        assert loaded == [(GEMMA, False)], f"MiniLM should have made room: {loaded}"
        assert runner_of(engine) is not gemma and not gemma.closed and m_entry.runner.closed
        running.close()
        assert gemma.closed


def test_loading_a_model_makes_room_for_its_kv_cache_not_only_its_weights(registered: ModelStore) -> None:
    with Engine(registered) as engine:
        engine.embed(MINILM, "warm up")  # MiniLM loaded, idle
        [m_entry] = engine.scheduler.loaded()
        gemma = registered.resolve(GEMMA).model_path.stat().st_size
        whole = engine.plan(GEMMA).attrs["size"]  # weights, the KV cache of its 4 slots, compute buffers
        # room for MiniLM beside Gemma's weights, but not beside all that Gemma's load takes
        engine.scheduler.budget = whole + m_entry.size // 2
        assert m_entry.size + gemma + 1024 * 1024 < engine.scheduler.budget
        assert engine.generate(GEMMA, "Hi", options={"num_predict": 1}).eval_count == 1
        loaded = [(e.name, e.key.embedding) for e in engine.scheduler.loaded()]
        assert loaded == [(GEMMA, False)], f"MiniLM should have made room for Gemma's KV cache: {loaded}"
        assert m_entry.runner.closed
        [gemma_ps] = engine.ps().models
        assert gemma_ps.size > gemma + 1024 * 1024  # ps counts the same size: weights and KV cache
