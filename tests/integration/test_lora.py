"""LoRA adapters (a Modelfile's ADAPTER lines) on the real SmolLM2, with a real LoRA GGUF written by
``tests/fixtures/lora.py``: applied at load, scaled per request, never batched across scales, checked
against the base at create and at load."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import llama_cpp
import pytest
import requests

from ollama_magic import Engine
from ollama_magic.errors import EngineError, InvalidRequest
from ollama_magic.names import ModelName
from ollama_magic.server import BackgroundServer
from ollama_magic.store import ModelStore
from ollama_magic.store import manifests as mt
from ollama_magic.store.manifests import Layer, Manifest
from tests.fixtures.lora import write_lora

pytestmark = pytest.mark.integration
BASE = "smollm2:135m"
TUNED = "smol-lora"
PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
GREEDY = {"temperature": 0, "num_predict": 10}


@pytest.fixture(scope="session")
def adapter(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    """A LoRA on every attention query projection of SmolLM2 (rank 8). The seed is one whose greedy
    reply to PROMPT has no near tie (each step's top two logits at least 0.49 apart with raw
    llama-cpp-python): batch shapes move logits by a few hundredths, which must not flip a token."""
    return write_lora(tmp_path_factory.mktemp("lora") / "smollm2-lora.gguf", smollm2_gguf, seed=7)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory, clone_registered, adapter: Path) -> Iterator[Engine]:
    with Engine(clone_registered(tmp_path_factory.mktemp("lora-store") / "models")) as engine:
        engine.create(TUNED, modelfile=f"FROM {BASE}\nADAPTER {adapter}\n")
        yield engine


def text(engine: Engine, model: str, **options: Any) -> str:
    return engine.generate(model, PROMPT, raw=True, options={**GREEDY, **options}).response


def test_the_adapter_changes_greedy_text_as_llama_cpp_python_applies_it(
        engine: Engine, smollm2_gguf: Path, adapter: Path) -> None:
    base, tuned = text(engine, BASE), text(engine, TUNED)
    assert tuned != base
    reference = llama_cpp.Llama(str(smollm2_gguf), n_ctx=512, verbose=False, lora_path=str(adapter))
    try:
        expected = reference(PROMPT, max_tokens=10, temperature=0)["choices"][0]["text"]
    finally:
        reference.close()
    assert tuned == expected


def test_at_scale_zero_the_reply_is_the_base_models_token_for_token(engine: Engine) -> None:
    base = engine.generate(BASE, PROMPT, raw=True, options=GREEDY).context
    assert engine.generate(TUNED, PROMPT, raw=True, options={**GREEDY, "lora_scale": 0}).context == base
    # llama-server's per-adapter form: adapter 0 at 0, and adapters left out of the list run at 0
    assert engine.generate(TUNED, PROMPT, raw=True, options={**GREEDY, "lora": [{"id": 0, "scale": 0}]}).context == base
    assert engine.generate(TUNED, PROMPT, raw=True, options={**GREEDY, "lora": []}).context != base  # [] = default


def test_requests_at_different_scales_together_each_get_what_they_get_alone(engine: Engine) -> None:
    options = {"temperature": 0, "num_predict": 24}
    alone = {scale: engine.generate(TUNED, PROMPT, raw=True, options={**options, "lora_scale": scale}).context
             for scale in (0.0, 1.0)}
    assert alone[0.0] != alone[1.0]
    together: dict[float, list[int]] = {}
    start = threading.Barrier(4)

    def ask(scale: float, key: float) -> None:
        start.wait()
        reply = engine.generate(TUNED, PROMPT, raw=True, options={**options, "lora_scale": scale})
        together[key] = reply.context

    threads = [threading.Thread(target=ask, args=(scale, key))
               for key, scale in ((0.0, 0.0), (1.0, 1.0), (0.01, 0.0), (1.01, 1.0))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert together[0.0] == together[0.01] == alone[0.0]
    assert together[1.0] == together[1.01] == alone[1.0]


def test_a_prompt_cached_under_one_scale_is_not_reused_under_another(engine: Engine) -> None:
    """The second request's prompt is the first's, whose cells a slot holds, computed at scale 1: read at
    scale 0 they would move the reply's log probabilities by tenths (measured: -1.14 for -0.55)."""
    def logprobs(model: str, **options: Any) -> list[float]:
        reply = engine.generate(model, PROMPT, raw=True, logprobs=True, options={**GREEDY, **options})
        return [t.logprob for t in reply.logprobs]

    for model in (BASE, TUNED):  # fresh caches: every prompt below is evaluated whole unless reused wrongly
        engine.generate(model, "", keep_alive=0)
    base = logprobs(BASE)
    logprobs(TUNED, lora_scale=1.0)
    assert logprobs(TUNED, lora_scale=0.0) == pytest.approx(base, abs=1e-3)


def test_embeddings_go_through_the_adapter_too(engine: Engine) -> None:
    base = engine.embed(BASE, "The capital of France is Paris.").embeddings[0]
    tuned = engine.embed(TUNED, "The capital of France is Paris.").embeddings[0]
    assert len(base) == len(tuned) and base != tuned


def test_show_modelfile_round_trips_the_adapter_line(engine: Engine) -> None:
    modelfile = engine.show(TUNED).modelfile
    [line] = [line for line in modelfile.splitlines() if line.startswith("ADAPTER ")]
    engine.create("smol-lora-copy", modelfile=modelfile)
    store = engine.store
    digests = [[x.digest for x in store.find(name).manifest.layers_of(mt.ADAPTER)] for name in (TUNED, "smol-lora-copy")]
    assert digests[0] == digests[1] and len(digests[0]) == 1 and digests[0][0].replace(":", "-") in line
    assert text(engine, "smol-lora-copy") == text(engine, TUNED)


@pytest.mark.parametrize("build, words", [
    ({"architecture": "llama", "base": "gemma"}, "attn_q.weight is [576, 576] in the base"),  # gemma3's dims
    ({"base": "gemma"}, "it is for architecture 'gemma3', the base is 'llama'"),
    ({"transpose_b": True}, "expected [576, 8] and [8, 576]"),  # rank on the wrong side of lora_b
    ({"adapter_type": "control_vector"}, "only LoRA adapters"),
])
def test_an_adapter_that_does_not_fit_its_base_is_refused_at_create_in_one_line(
        engine: Engine, tmp_path: Path, smollm2_gguf: Path, gemma_blob: Path, build: dict, words: str) -> None:
    base = gemma_blob if build.pop("base", None) == "gemma" else smollm2_gguf
    bad = write_lora(tmp_path / "bad.gguf", base, **build)
    with pytest.raises(InvalidRequest) as refused:
        engine.create("smol-bad", modelfile=f"FROM {BASE}\nADAPTER {bad}\n")
    message = str(refused.value)
    assert words in message and "\n" not in message and "bad.gguf" in message
    assert engine.store.find("smol-bad") is None


def _install_with_adapter(store: ModelStore, name: str, adapter_file: Path) -> None:
    """``name``: smol-lora's manifest with its adapter layer swapped for ``adapter_file`` (a store edited
    by hand: nothing checked it)."""
    digest = store.blobs.import_file(adapter_file)
    source = store.find(TUNED).manifest
    layers = tuple(Layer(mt.ADAPTER, digest, adapter_file.stat().st_size) if x.media_type == mt.ADAPTER else x
                   for x in source.layers)
    store._write_manifest(ModelName.parse(name), Manifest(source.config, layers))


def test_a_bad_adapter_that_slipped_into_the_store_fails_the_load_not_the_process(
        engine: Engine, tmp_path: Path, gemma_blob: Path, adapter: Path) -> None:
    _install_with_adapter(engine.store, "smol-handmade", write_lora(tmp_path / "g.gguf", gemma_blob, architecture="llama"))
    with pytest.raises(EngineError, match="does not fit its base model"):
        engine.generate("smol-handmade", PROMPT, raw=True, options=GREEDY)
    truncated = tmp_path / "truncated.gguf"  # a header that checks out, tensor data cut short: llama.cpp's NULL
    truncated.write_bytes(adapter.read_bytes()[: adapter.stat().st_size // 2])
    _install_with_adapter(engine.store, "smol-truncated", truncated)
    with pytest.raises(EngineError, match="could not load the LoRA adapter"):
        engine.generate("smol-truncated", PROMPT, raw=True, options=GREEDY)
    assert text(engine, TUNED) != text(engine, BASE)  # the process, and the good model, still work


def test_the_adapter_is_in_the_loaded_size(engine: Engine, adapter: Path) -> None:
    text(engine, BASE)
    text(engine, TUNED)
    sizes = {m.name: m.size for m in engine.ps().models}
    grown = sizes[f"{TUNED}:latest"] - sizes[BASE]
    assert adapter.stat().st_size * 0.9 < grown < adapter.stat().st_size * 1.5


@pytest.fixture(scope="module")
def url(engine: Engine) -> Iterator[str]:
    with BackgroundServer(engine, port=0) as server:
        yield server.url


@pytest.mark.parametrize("options, words", [
    ({"lora_scale": 100}, 'option "lora_scale" must be from -10 to 10'),
    ({"lora_scale": "high"}, 'option "lora_scale" must be a number'),
    ({"lora": [{"id": 1, "scale": 1}]}, 'adapter 1 does not exist: smol-lora:latest has adapter 0'),
    ({"lora": [{"id": 0}]}, 'option "lora" must be a list of'),
    ({"lora": {"id": 0, "scale": 1}}, 'option "lora" must be a list of'),
])
def test_a_bad_lora_option_is_a_400_over_http(url: str, options: dict, words: str) -> None:
    for route, body in (("/api/generate", {"prompt": "hi"}), ("/api/chat", {"messages": [{"role": "user", "content": "hi"}]})):
        reply = requests.post(url + route, json={"model": TUNED, "stream": False, "options": options, **body}, timeout=60)
        assert reply.status_code == 400, reply.text
        assert words in reply.json()["error"]
