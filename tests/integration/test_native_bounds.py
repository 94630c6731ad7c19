"""Where Python meets llama.cpp's memory and threads (review §6 B1-B4, B8): sizes a user sends must
never reach llama.cpp unchecked, since its GGML_ASSERTs abort the whole process (a dead kernel or
server); buffers are not shared across threads; a load cut short or a stream nobody reads frees or
stops what it started.

The scenarios that could abort (or signal) the process run in a child Python process, so that an
abort shows up as that child's exit code instead of killing the test session."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration
SMOLLM2 = "smollm2:135m"


def run_isolated(root: Path, body: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run ``body`` in a fresh interpreter with ``engine`` (an Engine on the registered store) in scope."""
    code = "from ollama_magic import Engine\nfrom ollama_magic.store import ModelStore\n" \
           f"engine = Engine(ModelStore({str(root)!r}))\n" + textwrap.dedent(body) + "\nengine.close()\n"
    return subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=timeout)


def test_a_batch_smaller_than_the_concurrent_streams_answers_every_stream(registered_root: Path) -> None:
    done = run_isolated(registered_root, f"""
        from concurrent.futures import ThreadPoolExecutor
        def ask(i):
            return engine.generate({SMOLLM2!r}, f"Count to {{i + 3}}.",
                                   options={{"num_batch": 2, "num_predict": 6, "temperature": 0}}).response
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(ask, range(3)))
        assert all(a.strip() for a in answers), answers
        print("ANSWERED", len(answers))
    """)
    assert done.returncode == 0 and "ANSWERED 3" in done.stdout, done.stderr[-3000:]


@pytest.mark.parametrize("num_batch", [0, -5])
def test_a_zero_or_negative_batch_answers_or_is_refused_cleanly(registered_root: Path, num_batch: int) -> None:
    done = run_isolated(registered_root, f"""
        from ollama_magic.errors import OllamaMagicError
        try:
            reply = engine.generate({SMOLLM2!r}, "Hi", options={{"num_batch": {num_batch}, "num_predict": 4}})
            print("ANSWERED", bool(reply.done))
        except OllamaMagicError as exc:
            print("REFUSED", exc)
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ANSWERED True" in done.stdout or "REFUSED" in done.stdout, done.stdout


def test_embedding_texts_longer_together_than_a_small_context_gives_each_its_own_vector(
        registered_root: Path) -> None:
    done = run_isolated(registered_root, """
        import numpy as np
        text = " ".join(f"word{i}" for i in range(30))  # about 60 tokens
        texts = [text, text + " again", "short " + text]
        together = engine.embed("all-minilm", texts, options={"num_ctx": 128}).embeddings
        alone = [engine.embed("all-minilm", t, options={"num_ctx": 128}).embeddings[0] for t in texts]
        assert len(together) == 3
        for a, b in zip(together, alone):  # the same vector, up to packing's float noise (about 1e-4)
            assert float(np.dot(a, b)) > 0.9999 and np.allclose(a, b, atol=2e-3), float(np.dot(a, b))
        print("EMBEDDED", len(together))
    """)
    assert done.returncode == 0 and "EMBEDDED 3" in done.stdout, done.stderr[-3000:]


def test_detokenize_beside_a_stream_gives_exact_text_to_both(registered: ModelStore) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from ollama_magic import Engine

    options = {"num_predict": 64, "temperature": 0, "stop": []}
    prompt = "Write a long story about a lighthouse keeper and the sea."
    with Engine(registered) as engine:
        alone = engine.generate(SMOLLM2, prompt, options=options).response
        words = engine.tokenize(SMOLLM2, "antidisestablishmentarianism, a! b? supercalifragilistic").tokens
        expected = engine.detokenize(SMOLLM2, words).content
        stop = False

        def hammer() -> list[str]:
            wrong = []
            while not stop:
                got = engine.detokenize(SMOLLM2, words).content
                if got != expected:
                    wrong.append(got)
                time.sleep(0.002)  # leave the owner thread the GIL now and then (2-core machines)
            return wrong

        with ThreadPoolExecutor(3) as pool:
            hammers = [pool.submit(hammer) for _ in range(3)]
            try:
                streamed = "".join(c.response for c in engine.generate(SMOLLM2, prompt, options=options, stream=True))
            finally:
                stop = True
            wrong = [w for h in hammers for w in h.result()]
    assert streamed == alone
    assert wrong == []


def test_ctrl_c_during_a_load_frees_the_model_and_a_later_load_works(registered_root: Path) -> None:
    """Ctrl-C lands on the waiting (kernel) thread while the owner thread is still loading: what the
    load created must be freed when it ends, not leaked until the process dies."""
    done = run_isolated(registered_root, f"""
        import os, signal, time
        from ollama_magic.engine import runner as runner_module
        from ollama_magic.engine.runner import LoadOptions, Runner

        contexts = []

        class InterruptedWhileLoading(runner_module.LlamaContext):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                contexts.append(self)
                os.kill(os.getpid(), signal.SIGINT)  # the user presses Stop now
                time.sleep(0.5)  # and the load goes on a little after it

        path = engine.store.find({SMOLLM2!r}).model_path
        load = LoadOptions(num_ctx=256, num_batch=64, num_gpu=0, num_thread=1, use_mmap=True,
                           embedding=False, num_parallel=2, projector="")
        runner_module.LlamaContext = InterruptedWhileLoading
        started = time.monotonic()
        try:
            Runner(path, load, name="smollm2")
            print("NOT INTERRUPTED")
        except KeyboardInterrupt:
            print("INTERRUPTED after", round(time.monotonic() - started, 1))
        runner_module.LlamaContext = InterruptedWhileLoading.__mro__[1]
        time.sleep(1)
        print("FREED", [c.ctx is None and c.model is None for c in contexts])
        again = Runner(path, load, name="smollm2")
        print("RELOADED", again.lctx is not None)
        again.close()
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "INTERRUPTED" in done.stdout and "FREED [True]" in done.stdout and "RELOADED True" in done.stdout, \
        done.stdout


def test_a_stream_dropped_before_it_was_read_stops_decoding(registered: ModelStore) -> None:
    """A server task cancelled at shutdown drops its queued stream without closing it: the job must
    stop, not decode to num_predict with nobody reading (review §6 B8)."""
    import gc

    from ollama_magic import Engine

    with Engine(registered) as engine:
        engine.generate(SMOLLM2, "Hi", options={"num_predict": 1})  # loaded
        [entry] = [e for e in engine.scheduler.loaded() if e.name == SMOLLM2]
        runner = entry.runner
        stream = engine.generate(SMOLLM2, "Tell me a very long story.", stream=True,
                                 options={"num_predict": 2000, "stop": [], "temperature": 0})
        stream.start()  # queued on the model; nothing read yet
        before = runner.tokens_decoded
        del stream
        gc.collect()
        time.sleep(1.5)  # a fixed wait: busy() reads False for a moment while a job is being admitted
        assert runner.waiting == 0 and not runner.decoder.busy()
        # its prompt (about 40 tokens) and a token or two, not a story of hundreds nobody reads
        assert runner.tokens_decoded - before < 100
