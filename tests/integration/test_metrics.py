"""``/metrics`` on the live server over the real models, read with prometheus_client's own parser around
real requests: the counters move by what the responses say (prompt_eval_count, eval_count, usage), each
generation is one observation in each latency histogram, HTTP requests count by route template and
status, the gauges show the loaded model with its bytes and slots; an in-process call (what a magic or
a widget makes) counts the same; off by default, behind the API key when on."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ollama_magic import Engine
from ollama_magic.server import BackgroundServer


pytestmark = pytest.mark.integration
GEMMA, MINILM = "gemma3:270m", "all-minilm"
MINILM_LOADED = "all-minilm:latest"  # the label is the name /api/ps shows
KEEP = {"temperature": 0, "num_predict": 8}
Scrape = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, clone_registered) -> Iterator[Engine]:
    with Engine(clone_registered(tmp_path_factory.mktemp("metrics") / "models")) as engine:
        yield engine


@pytest.fixture(scope="module")
def url(engine: Engine) -> Iterator[str]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OLLAMA_MAGIC_METRICS", "1")
        with BackgroundServer(engine, port=0) as server:
            yield server.url


def scrape(url: str, **headers: str) -> Scrape:
    response = requests.get(url + "/metrics", headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def get(scraped: Scrape, name: str, **labels: str) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return get(after, name, **labels) - get(before, name, **labels)


def post(url: str, path: str, body: dict) -> requests.Response:
    return requests.post(url + path, json=body, timeout=300)


def lines(response: requests.Response) -> list[dict]:
    return [json.loads(line) for line in response.iter_lines() if line]


def test_counters_and_histograms_move_by_what_the_responses_say(url: str) -> None:
    post(url, "/api/generate", {"model": GEMMA, "prompt": "Hi", "options": KEEP})  # loaded before we count
    before = scrape(url)
    done = []
    done.append(post(url, "/api/generate", {"model": GEMMA, "prompt": "Name a colour.", "stream": False,
                                            "options": KEEP}).json())
    done.append(lines(post(url, "/api/chat", {"model": GEMMA, "options": KEEP,
                                              "messages": [{"role": "user", "content": "Name a fruit."}]}))[-1])
    done.append(post(url, "/api/chat", {"model": GEMMA, "stream": False, "options": KEEP,
                                        "messages": [{"role": "user", "content": "Name a tree."}]}).json())
    start = time.perf_counter()
    openai = post(url, "/v1/chat/completions", {"model": GEMMA, "max_tokens": 8, "temperature": 0,
                                                "messages": [{"role": "user", "content": "Name a bird."}]}).json()
    openai_seconds = time.perf_counter() - start
    embed = post(url, "/api/embed", {"model": MINILM, "input": ["one text", "and another one"]}).json()
    missing = post(url, "/api/generate", {"model": "no-such-model", "prompt": "hi"})
    assert missing.status_code == 404
    after = scrape(url)

    assert all(d["done"] and d["eval_count"] > 0 for d in done)
    prompt = sum(d["prompt_eval_count"] for d in done) + openai["usage"]["prompt_tokens"]
    generated = sum(d["eval_count"] for d in done) + openai["usage"]["completion_tokens"]
    assert moved(before, after, "ollama_magic_prompt_tokens_total", model=GEMMA) == prompt
    assert moved(before, after, "ollama_magic_tokens_predicted_total", model=GEMMA) == generated
    assert moved(before, after, "ollama_magic_prompt_tokens_total", model=MINILM_LOADED) == embed["prompt_eval_count"] > 0
    for histogram in ("time_to_first_token_seconds", "time_per_output_token_seconds"):
        assert moved(before, after, f"ollama_magic_{histogram}_count", model=GEMMA) == 4  # one per generation
        assert moved(before, after, f"ollama_magic_{histogram}_bucket", model=GEMMA, le="+Inf") == 4
    # the native responses' own durations are what the histograms were given; the OpenAI response
    # carries none, so its share is only bounded by how long it took
    first = sum(d["total_duration"] - d["eval_duration"] for d in done) / 1e9
    per_token = sum(d["eval_duration"] / d["eval_count"] for d in done) / 1e9
    assert first < moved(before, after, "ollama_magic_time_to_first_token_seconds_sum", model=GEMMA) < first + openai_seconds
    assert per_token < moved(before, after, "ollama_magic_time_per_output_token_seconds_sum",
                             model=GEMMA) < per_token + openai_seconds

    count = "ollama_magic_http_requests_total"
    assert moved(before, after, count, method="POST", route="/api/generate", status="200") == 1
    assert moved(before, after, count, method="POST", route="/api/chat", status="200") == 2
    assert moved(before, after, count, method="POST", route="/v1/chat/completions", status="200") == 1
    assert moved(before, after, count, method="POST", route="/api/embed", status="200") == 1
    assert moved(before, after, count, method="POST", route="/api/generate", status="404") == 1
    assert moved(before, after, count, method="GET", route="/metrics", status="200") == 1  # the first scrape
    assert moved(before, after, "ollama_magic_http_request_duration_seconds_count",
                 method="POST", route="/api/chat") == 2


def test_gauges_show_the_loaded_models_with_their_bytes_and_slots(url: str) -> None:
    post(url, "/api/generate", {"model": GEMMA, "prompt": "Hello", "options": KEEP})
    scraped = scrape(url)
    ps = {m["name"]: m for m in requests.get(url + "/api/ps", timeout=10).json()["models"]}
    gemma = ps[GEMMA]
    assert get(scraped, "ollama_magic_models_loaded") == len(ps) >= 1
    assert get(scraped, "ollama_magic_model_size_bytes", model=GEMMA) == gemma["size"] > 0
    assert get(scraped, "ollama_magic_model_vram_bytes", model=GEMMA) == gemma["size_vram"]
    devices = {dict(labels)["device"]: v for (name, labels), v in scraped.items()
               if name == "ollama_magic_model_device_bytes" and dict(labels)["model"] == GEMMA}
    assert sum(devices.values()) == gemma["size"]
    slots = get(scraped, "ollama_magic_slots", model=GEMMA)
    assert slots >= 1
    assert get(scraped, "ollama_magic_kv_cache_cells", model=GEMMA) == slots * gemma["context_length"]
    assert 0 < get(scraped, "ollama_magic_kv_cache_tokens", model=GEMMA) <= slots * gemma["context_length"]
    assert get(scraped, "ollama_magic_busy_slots", model=GEMMA) == 0  # nothing running now
    assert get(scraped, "ollama_magic_requests_deferred", model=GEMMA) == 0


def test_a_classification_counts_its_prompt(url: str) -> None:
    before = scrape(url)
    reply = post(url, "/api/classify", {"model": "smollm2:135m", "prompt": "Is the sky blue?",
                                        "choices": ["yes", "no"]}).json()
    after = scrape(url)
    assert moved(before, after, "ollama_magic_prompt_tokens_total", model="smollm2:135m") == reply["prompt_eval_count"] > 0


@pytest.mark.parametrize("model, label", [("tiny-reranker", "tiny-reranker:latest"),
                                          ("smollm2:135m", "smollm2:135m")])
def test_a_rerank_counts_its_prompt(engine: Engine, url: str, cross_encoder_dir: Path, model: str,
                                    label: str) -> None:
    """Both paths: a cross-encoder's pairs and a chat model's relevance prompts are prompts read."""
    if engine.store.find(model) is None:
        engine.create(model, from_=str(cross_encoder_dir))
    documents = ["paris is the capital of france", "the cat sat on the mat", "bananas are yellow"]
    before = scrape(url)
    reply = post(url, "/v1/rerank", {"model": model, "query": "capital of france", "documents": documents}).json()
    after = scrape(url)
    assert moved(before, after, "ollama_magic_prompt_tokens_total", model=label) == reply["usage"]["prompt_tokens"] > 0


def test_a_running_stream_shows_as_a_busy_slot(url: str) -> None:
    body = {"model": GEMMA, "raw": True, "prompt": "a a a a a a a a a a a a", "stream": True,
            "options": {"temperature": 0, "num_predict": 400}}
    with requests.post(url + "/api/generate", json=body, stream=True, timeout=300) as response:
        chunks = response.iter_lines()
        assert not json.loads(next(chunks))["done"]
        during = scrape(url)
        rest = [json.loads(line) for line in chunks if line]
    assert rest and rest[-1]["eval_count"] > 100, "the stream ended before the scrape could see it"
    assert get(during, "ollama_magic_busy_slots", model=GEMMA) == 1
    assert get(during, "ollama_magic_requests_processing", model=GEMMA) >= 1


def test_an_in_process_call_counts_like_an_http_one(engine: Engine, url: str) -> None:
    """What a magic or a widget makes: an Engine call, no HTTP. The same counters move."""
    before = scrape(url)
    reply = engine.generate(GEMMA, "Name a river.", options=KEEP)
    after = scrape(url)
    assert moved(before, after, "ollama_magic_prompt_tokens_total", model=GEMMA) == reply.prompt_eval_count
    assert moved(before, after, "ollama_magic_tokens_predicted_total", model=GEMMA) == reply.eval_count
    assert moved(before, after, "ollama_magic_time_to_first_token_seconds_count", model=GEMMA) == 1
    assert moved(before, after, "ollama_magic_http_requests_total", method="POST", route="/api/generate",
                 status="200") == 0


def test_metrics_are_off_by_default_and_behind_the_api_key(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_MAGIC_METRICS", raising=False)
    with BackgroundServer(engine, port=0) as server:
        assert requests.get(server.url + "/metrics", timeout=10).status_code == 404
    monkeypatch.setenv("OLLAMA_MAGIC_METRICS", "1")
    with BackgroundServer(engine, port=0, api_key="s3cret") as server:
        refused = requests.get(server.url + "/metrics", timeout=10)
        assert refused.status_code == 401 and "unauthorized" in refused.json()["error"]
        assert get(scrape(server.url, Authorization="Bearer s3cret"), "ollama_magic_http_requests_total",
                   method="GET", route="/metrics", status="401") == 1
