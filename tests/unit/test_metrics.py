"""The engine's Prometheus metrics without a model: what a generation's counts become, the state read at
scrape time, the column cache's counters, HTTP requests by route template, and the switch and guards
of ``/metrics`` (the live server on real models: tests/integration/test_metrics.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from ollama_magic import Engine
from ollama_magic.metrics import EngineMetrics
from ollama_magic.server.app import create_app
from ollama_magic.store import ModelStore
from ollama_magic.store.column_cache import ColumnCache


def samples(text: str | bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape by (name, sorted labels), read with prometheus_client's own parser."""
    text = text.decode() if isinstance(text, bytes) else text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scrape: dict, name: str, **labels: str) -> float | None:
    return scrape.get((name, tuple(sorted(labels.items()))))


def loaded(name: str, **fields: Any) -> SimpleNamespace:
    base = dict(name=name, embedding=False, active=0, waiting=0, busy_slots=0, slots=4, kv_tokens=0, kv_cells=8192,
                size=100, size_vram=0, devices={"CPU": 100}, expiring=False)
    return SimpleNamespace(**{**base, **fields})


def test_a_generation_adds_its_counts_and_one_observation_to_each_histogram() -> None:
    metrics = EngineMetrics(lambda: [])
    metrics.generated("m", prompt_eval_count=12, eval_count=4, eval_duration_ns=400_000_000,
                      total_duration_ns=1_500_000_000)
    metrics.generated("m", prompt_eval_count=3, eval_count=0, eval_duration_ns=1, total_duration_ns=10)
    got = samples(metrics.scrape())
    assert value(got, "ollama_magic_prompt_tokens_total", model="m") == 15
    assert value(got, "ollama_magic_tokens_predicted_total", model="m") == 4
    # no token, no first token: only the first generation is observed
    assert value(got, "ollama_magic_time_to_first_token_seconds_count", model="m") == 1
    assert value(got, "ollama_magic_time_to_first_token_seconds_sum", model="m") == pytest.approx(1.1)
    assert value(got, "ollama_magic_time_to_first_token_seconds_bucket", model="m", le="1.0") == 0
    assert value(got, "ollama_magic_time_to_first_token_seconds_bucket", model="m", le="2.5") == 1
    assert value(got, "ollama_magic_time_per_output_token_seconds_sum", model="m") == pytest.approx(0.1)
    assert value(got, "ollama_magic_time_per_output_token_seconds_count", model="m") == 1


def test_two_engines_keep_their_own_numbers() -> None:
    """Each Engine has its own registry: the same names register twice without a clash, and one
    engine's requests are not in the other's scrape."""
    first, second = EngineMetrics(lambda: []), EngineMetrics(lambda: [])
    first.prompt_read("m", 5)
    assert value(samples(first.scrape()), "ollama_magic_prompt_tokens_total", model="m") == 5
    assert value(samples(second.scrape()), "ollama_magic_prompt_tokens_total", model="m") is None


def test_the_state_is_read_at_scrape_time_one_series_per_model() -> None:
    state = [loaded("a", active=3, waiting=1, busy_slots=2, kv_tokens=300, size=1000, size_vram=600,
                    devices={"CPU": 400, "CUDA0": 600}),
             loaded("b", embedding=True, slots=0, kv_cells=0, size=50, devices={"CPU": 50}),
             # "a" again, replaced by new load options while a request still uses it: summed into "a"
             loaded("a", active=1, kv_tokens=20, size=10, devices={"CPU": 10}, expiring=True)]
    metrics = EngineMetrics(lambda: state)
    got = samples(metrics.scrape())
    assert value(got, "ollama_magic_requests_processing", model="a") == 3  # (3 - 1) + 1
    assert value(got, "ollama_magic_requests_deferred", model="a") == 1
    assert value(got, "ollama_magic_busy_slots", model="a") == 2
    assert value(got, "ollama_magic_kv_cache_tokens", model="a") == 320
    assert value(got, "ollama_magic_models_loaded") == 2  # the expiring copy is not in service
    assert value(got, "ollama_magic_model_size_bytes", model="a") == 1010
    assert value(got, "ollama_magic_model_vram_bytes", model="a") == 600
    assert value(got, "ollama_magic_model_device_bytes", model="a", device="CPU") == 410
    assert value(got, "ollama_magic_model_device_bytes", model="a", device="CUDA0") == 600
    assert value(got, "ollama_magic_model_device_bytes", model="b", device="CPU") == 50
    state.clear()  # everything unloaded: the next scrape says so
    got = samples(metrics.scrape())
    assert value(got, "ollama_magic_models_loaded") == 0
    assert value(got, "ollama_magic_busy_slots", model="a") is None


def test_column_cache_counters_are_read_from_its_file_when_it_exists(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    metrics = EngineMetrics(lambda: [], lambda: path)
    assert not any(name.startswith("ollama_magic_column_cache") for name, _ in samples(metrics.scrape()))
    with ColumnCache(path) as cache:
        cache.count("gemma3:270m", hits=3, misses=2)
        got = samples(metrics.scrape())  # read while a writer holds the file open
        cache.count("gemma3:270m", hits=1)
    assert value(got, "ollama_magic_column_cache_hits_total", model="gemma3:270m") == 3
    assert value(got, "ollama_magic_column_cache_misses_total", model="gemma3:270m") == 2
    assert value(samples(metrics.scrape()), "ollama_magic_column_cache_hits_total", model="gemma3:270m") == 4


def test_a_file_that_is_not_a_cache_gives_no_numbers_and_no_error(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"not sqlite at all" * 100)
    got = samples(EngineMetrics(lambda: [], lambda: path).scrape())
    assert not any(name.startswith("ollama_magic_column_cache") for name, _ in got)
    assert path.read_bytes() == b"not sqlite at all" * 100


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with Engine(ModelStore(tmp_path / "models")) as engine:
        yield engine


def test_metrics_are_off_unless_asked(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_MAGIC_METRICS", raising=False)
    client = TestClient(create_app(engine))
    assert client.get("/metrics").status_code == 404
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]
    monkeypatch.setenv("OLLAMA_MAGIC_METRICS", "1")
    client = TestClient(create_app(engine))
    assert client.get("/metrics").status_code == 200
    assert "/metrics" in client.get("/openapi.json").json()["paths"]


def test_http_requests_count_by_route_template_and_status_refusals_included(engine: Engine) -> None:
    client = TestClient(create_app(engine, api_key="s3cret", metrics=True))
    key = {"Authorization": "Bearer s3cret"}
    assert client.get("/metrics").status_code == 401  # behind the API key like every route
    assert client.get("/api/version", headers=key).status_code == 200
    digest = "sha256:" + "0" * 64
    assert client.head(f"/api/blobs/{digest}", headers=key).status_code == 404
    assert client.get("/no/such/path", headers=key).status_code == 404
    assert client.post("/api/show", json={"model": "nope"}, headers=key).status_code == 404
    for method in ("BREW", "WHEN"):  # any token is a method: they must not each become a series
        client.request(method, "/api/version", headers=key)
    response = client.get("/metrics", headers=key)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    count = "ollama_magic_http_requests_total"
    assert value(got, count, method="GET", route="/metrics", status="401") == 1
    assert value(got, count, method="GET", route="/api/version", status="200") == 1
    assert value(got, count, method="HEAD", route="/api/blobs/{digest}", status="404") == 1  # not one per digest
    assert value(got, count, method="GET", route="unmatched", status="404") == 1
    assert value(got, count, method="POST", route="/api/show", status="404") == 1
    assert value(got, "ollama_magic_http_request_duration_seconds_count", method="GET", route="/api/version") == 1
    assert value(got, count, method="other", route="/api/version", status="405") == 2
