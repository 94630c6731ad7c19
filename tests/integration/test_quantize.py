"""Quantize on create (issue 26), on real models: all-minilm (F16) to Q8_0 keeps its vectors, an F16
text model (smollm2's weights written back as F16) to Q4_K_M still writes text and is smaller by the
ratio the types give, quantized sources and unknown types are refused in Ollama's words, progress
streams through the official ``ollama`` client, and a failed or cancelled quantize leaves nothing.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import ollama
import psutil
import pytest

from ollama_magic.engine import Engine
from ollama_magic.errors import EngineError, InvalidRequest
from ollama_magic.files import TMP_PREFIX
from ollama_magic.store import ModelStore
from ollama_magic.store.blobs import hash_file
from ollama_magic.types import CreateRequest

from .conftest import engine_and_url_fixtures

FIXTURES = Path(__file__).parent.parent / "fixtures"
SOURCE_REFUSAL = "quantization is only supported for F16, BF16 and F32 models"

engine, url = engine_and_url_fixtures("quantize")


def texts(count: int = 1000) -> list[str]:
    """``count`` varied sentences, the same on every run: short and long, questions, numbers, code."""
    rng = random.Random(26)
    subjects = ["the cat", "a physicist", "my neighbour", "the committee", "this function", "an old ship",
                "the river", "a startup", "the orchestra", "her grandmother", "the compiler", "a glacier"]
    verbs = ["explains", "ignores", "measures", "repairs", "describes", "celebrates", "predicts", "rejects",
             "paints", "translates", "optimises", "remembers"]
    objects = ["the weather in Lisbon", "quantum tunnelling", "a broken bicycle", "the quarterly budget",
               "an unfinished symphony", "the price of bread", "a recursive descent parser", "migrating birds",
               "the rules of chess", "a forgotten password", "volcanic soil", "the night sky"]
    extras = ["yesterday", "with great care", "for the third time", "despite the rain", "in 1987",
              "before breakfast", "according to the report", "without any help", "at 42 km/h", "again"]
    out = []
    for i in range(count):
        words = [rng.choice(subjects), rng.choice(verbs), rng.choice(objects)]
        words += rng.sample(extras, rng.randint(0, 4))
        sentence = " ".join(words)
        kind = i % 5
        if kind == 1:
            sentence = f"Why {sentence}?"
        elif kind == 2:
            sentence = f"{sentence}. " + " ".join(rng.choice(objects) for _ in range(rng.randint(2, 12)))
        elif kind == 3:
            sentence = f"def f{i}(x): return x * {rng.randint(2, 999)}  # {sentence}"
        out.append(sentence[0].upper() + sentence[1:] + ("" if kind in (1, 3) else "."))
    assert len(set(out)) > 0.95 * count
    return out


def temp_files(store: ModelStore) -> list[str]:
    return [p.name for p in store.blobs.directory.iterdir() if p.name.startswith(TMP_PREFIX)]


@pytest.fixture(scope="module")
def f16_smollm2(tmp_path_factory: pytest.TempPathFactory, registered: ModelStore) -> Path:
    """smollm2:135m's weights as an F16 GGUF (``tests/fixtures/f16_gguf.py``; about 271 MB)."""
    out = tmp_path_factory.mktemp("f16") / "smollm2-135m-f16.gguf"
    subprocess.run([sys.executable, str(FIXTURES / "f16_gguf.py"), str(registered.find("smollm2:135m").model_path),
                    str(out)], check=True)
    return out


def test_all_minilm_to_q8_0_keeps_its_vectors(engine: Engine) -> None:
    source = engine.store.find("all-minilm")
    statuses = [s.status for s in engine.create("minilm-q8", from_="all-minilm", quantize="q8_0", stream=True)]
    assert statuses[0] == "quantizing F16 model to Q8_0" and statuses[-1] == "success"
    quantized = engine.store.find("minilm-q8")
    assert quantized.details.quantization_level == "Q8_0"
    # 8.5 bits a weight for 16, plus the F32 norms and biases and the vocabulary: measured 0.547
    ratio = quantized.model_path.stat().st_size / source.model_path.stat().st_size
    assert 0.50 < ratio < 0.58, ratio
    assert engine.store.blobs.has(source.manifest.layer("application/vnd.ollama.image.model").digest)  # still used

    inputs = texts()
    want = np.array(engine.embed(model="all-minilm", input=inputs).embeddings)
    got = np.array(engine.embed(model="minilm-q8", input=inputs).embeddings)
    assert want.shape == got.shape == (1000, 384)
    cosine = (want * got).sum(1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    print(f"cosine over 1000 texts: min {cosine.min():.6f} mean {cosine.mean():.6f}")
    assert cosine.min() >= 0.999


def test_an_f16_text_model_to_q4_K_M_writes_text_and_is_smaller(engine: Engine, f16_smollm2: Path) -> None:
    engine.create("smol-q4", from_=str(f16_smollm2), quantize="Q4_K_M", template="{{ .Prompt }}")
    record = engine.store.find("smol-q4")
    assert record.details.quantization_level == "Q4_K_M"
    # 4.5-6.6 bits a weight for 16; smollm2's 576-wide rows do not divide K-quants' 256-blocks, so llama.cpp
    # gives those Q5_0 and the tied embedding Q8_0: measured 0.389 (a 7B llama with 4096-wide rows: 0.30)
    ratio = record.model_path.stat().st_size / f16_smollm2.stat().st_size
    assert 0.30 < ratio < 0.42, ratio
    reply = engine.generate(model="smol-q4", prompt="The capital of France is",
                            options={"temperature": 0, "num_predict": 12}).response
    assert "Paris" in reply
    # the F16 copy was imported into the store only for this create: no model uses it, so it is gone
    assert not engine.store.blobs.has(hash_file(f16_smollm2))
    assert temp_files(engine.store) == []


@pytest.mark.parametrize("model", ["gemma3:270m", "smollm2:135m"])
def test_a_quantized_source_is_refused_in_ollamas_words(url: str, model: str) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        for _ in ollama.Client(url).create(model="requantized", from_=model, quantize="q4_K_M", stream=True):
            pass
    assert caught.value.error == SOURCE_REFUSAL


def test_an_unknown_type_is_refused(url: str, engine: Engine) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(url).create(model="q5", from_="all-minilm", quantize="q5_0")
    assert caught.value.error == ("unsupported quantization type Q5_0 - supported types are "
                                  "F32, F16, Q4_K_S, Q4_K_M, Q8_0")
    assert caught.value.status_code == 400
    assert engine.store.find("q5") is None
    # the form of the brief: from_ an installed model, streamed
    last = list(ollama.Client(url).create(model="minilm-http", from_="all-minilm", quantize="q8_0", stream=True))[-1]
    assert last.status == "success" and engine.store.find("minilm-http").details.quantization_level == "Q8_0"


def test_progress_streams_through_the_ollama_client(url: str, engine: Engine, f16_smollm2: Path) -> None:
    """An uploaded F16 blob, quantized over HTTP: Ollama's statuses in Ollama's order, the quantize ones
    with a moving completed/total, and the upload removed once the quantized model replaces it."""
    client = ollama.Client(url)
    digest = client.create_blob(f16_smollm2)
    updates = list(client.create(model="smol-http", files={"smol.gguf": digest}, quantize="q4_K_S", stream=True))
    quantizing = [u for u in updates if u.status == "quantizing F16 model to Q4_K_S"]
    assert len(quantizing) > 100  # one per tensor (272)
    assert {u.digest for u in quantizing} == {"0000000000000000000"}
    assert {u.total for u in quantizing} == {f16_smollm2.stat().st_size}
    completed = [u.completed for u in quantizing]
    assert completed == sorted(completed) and completed[0] == 0 and completed[-1] == f16_smollm2.stat().st_size
    rest = [u.status for u in updates if u not in quantizing]
    assert rest[0] == "parsing GGUF" and rest[1] == "verifying conversion"
    assert rest[2].startswith("creating new layer sha256:")
    assert rest[-2:] == ["writing manifest", "success"]
    shown = client.show("smol-http")
    assert shown.details.quantization_level == "Q4_K_S"
    assert not engine.store.blobs.has(digest)  # the upload served this create only


def test_a_failed_quantize_leaves_no_temp_file_and_no_blob(tmp_path: Path, engine: Engine) -> None:
    """An F16 file whose tensor data is cut short: llama.cpp refuses it in the child; the error says
    why, and the store holds nothing new but the imported source."""
    whole = engine.store.find("all-minilm").model_path.read_bytes()
    broken = tmp_path / "broken-f16.gguf"
    broken.write_bytes(whole[: len(whole) - 1_000_000])
    before = engine.store.blobs.all_digests()
    with pytest.raises(EngineError, match="could not quantize"):
        engine.create("broken", from_=str(broken), quantize="q8_0")
    assert temp_files(engine.store) == []
    assert len(engine.store.blobs.all_digests() - before) == 1  # the import of the broken file, unreferenced
    assert engine.store.find("broken") is None


def test_an_adapter_that_does_not_fit_is_refused_before_the_quantize_starts(
        engine: Engine, f16_smollm2: Path, tmp_path: Path) -> None:
    """The adapter check needs only tensor shapes, which a quantize keeps: a bad ADAPTER is refused
    before minutes go into quantizing."""
    from tests.fixtures.lora import write_lora

    bad = write_lora(tmp_path / "sideways.gguf", f16_smollm2, transpose_b=True)
    statuses: list[str] = []
    with pytest.raises(InvalidRequest, match="expected \\[576, 8\\] and \\[8, 576\\]"):
        for update in engine.create("smol-bad-q", from_=str(f16_smollm2), adapters={"sideways.gguf": str(bad)},
                                    quantize="q4_K_M", stream=True):
            statuses.append(update.status)
    assert not any(s.startswith("quantizing") for s in statuses), statuses
    assert temp_files(engine.store) == [] and engine.store.find("smol-bad-q") is None


def test_a_cancelled_quantize_stops_the_child_and_leaves_nothing(engine: Engine, f16_smollm2: Path) -> None:
    before = engine.store.blobs.all_digests()
    others = {child.pid for child in psutil.Process().children(recursive=True)}  # the suite's servers, workers
    statuses: Iterator = engine.create("smol-cancelled", from_=str(f16_smollm2), quantize="q4_K_M", stream=True)
    for status in statuses:
        if status.status.startswith("quantizing") and status.completed:
            break
    children = [child for child in psutil.Process().children(recursive=True) if child.pid not in others]
    assert children, "the quantize runs in a child process"
    statuses.close()  # what the server does when the client goes away, and an interrupt in the kernel
    psutil.wait_procs(children, timeout=10)
    assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in children)
    assert temp_files(engine.store) == []
    assert engine.store.find("smol-cancelled") is None
    assert len(engine.store.blobs.all_digests() - before) <= 1  # at most the imported F16 source


def test_quantize_is_refused_before_anything_is_written_for_a_bad_type(engine: Engine) -> None:
    before = engine.store.blobs.all_digests()
    with pytest.raises(InvalidRequest, match="unsupported quantization type Q2_K"):
        engine.create("q2", from_="all-minilm", quantize="q2_k")
    assert engine.store.blobs.all_digests() == before


def test_create_request_keeps_quantization_as_the_old_field_name(engine: Engine) -> None:
    *_, last = engine.store.create("minilm-old-field", CreateRequest(from_="all-minilm", quantization="Q8_0"))
    assert last.status == "success"
    assert engine.store.find("minilm-old-field").details.quantization_level == "Q8_0"


def test_the_cli_quantizes_with_q(tmp_path: Path, clone_registered, capsys: pytest.CaptureFixture[str]) -> None:
    from ollama_magic.cli import main

    store = clone_registered(tmp_path / "models")
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("FROM all-minilm\n")
    assert main(["--models", str(store.root), "create", "minilm-cli", "-f", str(modelfile), "-q", "q8_0"]) == 0
    err = capsys.readouterr().err
    assert "quantizing F16 model to Q8_0" in err and err.rstrip().endswith("success")
    assert store.find("minilm-cli").details.quantization_level == "Q8_0"
    assert main(["--models", str(store.root), "create", "smol-cli", "--from", "smollm2:135m", "--quantize",
                 "q8_0"]) == 1
    assert f"Error: {SOURCE_REFUSAL}" in capsys.readouterr().err


def test_the_magic_quantizes_with_quantize(notebook_shell, tmp_path: Path, clone_registered) -> None:
    store = clone_registered(tmp_path / "models")
    ip = notebook_shell(store.root)
    assert ip.run_line_magic("ollama", "create minilm-nb --from all-minilm --quantize Q8_0") == "created minilm-nb"
    assert store.find("minilm-nb").details.quantization_level == "Q8_0"
