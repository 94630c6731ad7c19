"""The HTTP server under load, as Ollama behaves: a bounded queue (503 beyond OLLAMA_MAX_QUEUE),
non-streaming clients that hang up stop their generation, and waiting requests starve nothing."""

from __future__ import annotations

import json
import threading
import time
from typing import Iterator

import pytest
import requests

from ollama_magic import Engine
from ollama_magic.engine.runner import Runner
from ollama_magic.server import BackgroundServer

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"
BUSY = {"error": "server busy, please try again.  maximum pending requests exceeded"}


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory,
           clone_registered) -> Iterator[tuple[str, Engine]]:
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "1")
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "2")
    with Engine(clone_registered(tmp_path_factory.mktemp("queue") / "models")) as engine:
        server = BackgroundServer(engine, port=0)
        url = server.start()
        requests.post(url + "/api/generate", json={"model": GEMMA, "prompt": "Hi", "stream": False,
                                                   "options": {"num_predict": 1}}, timeout=120).raise_for_status()
        yield url, engine
        server.stop()


def runner_of(engine: Engine) -> Runner:
    [entry] = [e for e in engine.scheduler.loaded() if e.name == GEMMA]
    return entry.runner


def test_requests_beyond_max_queue_get_ollamas_503(served: tuple[str, Engine]) -> None:
    url, engine = served
    runner = runner_of(engine)
    # A grammar that cannot end before 400 numbers keeps the only slot busy (a plain prompt may hit EOS in a second)
    long_reply = {"type": "array", "items": {"type": "integer"}, "minItems": 400}
    body = {"model": GEMMA, "prompt": "Count:", "format": long_reply, "options": {"num_predict": 2000}}
    with requests.post(url + "/api/generate", json=body, stream=True, timeout=60) as running:
        next(running.iter_lines())  # the only slot is taken
        results: list[int] = []
        queued = [threading.Thread(target=lambda: results.append(requests.post(
            url + "/api/generate", json={"model": GEMMA, "prompt": "Hi", "stream": False,
                                         "options": {"num_predict": 1}}, timeout=120).status_code))
            for _ in range(2)]
        for t in queued:
            t.start()
        deadline = time.monotonic() + 30
        while runner.waiting < 2:
            assert time.monotonic() < deadline, f"the two requests never queued: waiting={runner.waiting} results={results} active={[e.active for e in engine.scheduler.loaded()]} runner_is_current={runner is runner_of(engine)}"
            time.sleep(0.02)
        refused = requests.post(url + "/api/chat", json={"model": GEMMA, "messages": [{"role": "user", "content": "x"}]},
                                timeout=30)
        assert refused.status_code == 503 and refused.json() == BUSY
        # /api/tags and /api/ps still answer while requests wait
        assert requests.get(url + "/api/ps", timeout=10).json()["models"][0]["name"] == GEMMA
    for t in queued:  # the stream's client went away: the queued ones run and succeed
        t.join(timeout=120)
    assert results == [200, 200]


def test_a_non_streaming_client_that_hangs_up_cancels_its_generation(served: tuple[str, Engine]) -> None:
    url, engine = served
    runner = runner_of(engine)
    [entry] = [e for e in engine.scheduler.loaded() if e.name == GEMMA]
    body = {"model": GEMMA, "prompt": "Tell me a very long story.", "stream": False, "options": {"num_predict": 3000}}
    with pytest.raises(requests.ReadTimeout):
        requests.post(url + "/api/generate", data=json.dumps(body), timeout=(10, 2))
    deadline = time.monotonic() + 15  # 3000 tokens would take minutes; a cancelled job ends within a token
    while entry.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert entry.active == 0
    decoded = runner.tokens_decoded
    assert runner.call(lambda: runner.tokens_decoded) == decoded  # nothing runs on behind its back
    ok = requests.post(url + "/api/generate", json={"model": GEMMA, "prompt": "Hi", "stream": False,
                                                    "options": {"num_predict": 2}}, timeout=60)
    assert ok.status_code == 200 and ok.json()["eval_count"] == 2


def test_queued_non_streaming_requests_hold_no_thread_each(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path_factory: pytest.TempPathFactory,
                                                           clone_registered) -> None:
    import asyncio

    import httpx

    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "1")
    monkeypatch.setenv("OLLAMA_MAX_QUEUE", "100")
    queued_count = 60
    with Engine(clone_registered(tmp_path_factory.mktemp("deep") / "models")) as engine, \
            BackgroundServer(engine, port=0) as server:
        url = server.url
        small = {"model": GEMMA, "prompt": "Hi", "stream": False, "options": {"num_predict": 1}}
        requests.post(url + "/api/generate", json=small, timeout=120).raise_for_status()
        runner = runner_of(engine)
        long_reply = {"type": "array", "items": {"type": "integer"}, "minItems": 400}
        body = {"model": GEMMA, "prompt": "Count:", "format": long_reply, "options": {"num_predict": 2000}}
        statuses: list[int | str] = []

        async def fire() -> None:  # 60 clients from one thread: the client side adds no thread each
            async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=queued_count)) as client:
                replies = await asyncio.gather(*(client.post(url + "/api/generate", json=small)
                                                 for _ in range(queued_count)), return_exceptions=True)
            statuses.extend(r.status_code if isinstance(r, httpx.Response) else repr(r) for r in replies)

        long_lines: list[dict] = []  # what the long request streamed, read as a real client reads
        taken = threading.Event()

        def read_long(response: requests.Response) -> None:
            try:
                for line in response.iter_lines():
                    long_lines.append(json.loads(line))
                    taken.set()
            except Exception:  # noqa: BLE001 - the test closes the response below
                pass

        running = requests.post(url + "/api/generate", json=body, stream=True, timeout=60)
        threading.Thread(target=read_long, args=(running,), daemon=True).start()
        try:
            assert taken.wait(120)  # the only slot is taken
            before = threading.active_count()
            clients = threading.Thread(target=asyncio.run, args=(fire(),))
            clients.start()
            deadline = time.monotonic() + 120
            while runner.waiting < queued_count:
                ended = [{k: v for k, v in line.items() if k != "context"} for line in long_lines[-1:] if line["done"]]
                assert time.monotonic() < deadline, \
                    f"{runner.waiting} of {queued_count} requests queued: {statuses}, threads " \
                    f"{threading.active_count()}; the long request streamed {len(long_lines)} lines, ended: {ended}"
                time.sleep(0.05)
            grown = threading.active_count() - before - 1  # less the clients' thread
            tags = requests.get(url + "/api/tags", timeout=10)  # answers while 60 wait
            assert tags.status_code == 200 and GEMMA in [m["name"] for m in tags.json()["models"]]
            assert grown < queued_count // 2, f"{grown} more threads with {queued_count} requests queued"
        finally:
            running.close()  # the stream's client goes away: the queued requests run
        clients.join(timeout=600)
        assert statuses == [200] * queued_count
