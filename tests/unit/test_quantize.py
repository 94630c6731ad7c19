"""Quantize on create without a model: which types and sources are taken (Ollama's rules and words),
and that a quantize llama.cpp refuses leaves no temp file and no blob. The real quantizations are in
tests/integration/test_quantize.py."""

from __future__ import annotations

from pathlib import Path

import gguf
import pytest

from conftest import write_tiny_gguf
from ollama_magic.errors import EngineError, InvalidRequest
from ollama_magic.files import TMP_PREFIX
from ollama_magic.store import ModelStore
from ollama_magic.store.blobs import hash_file
from ollama_magic.store.requests import to_spec
from ollama_magic.types import CreateRequest


@pytest.mark.parametrize(("asked", "name"), [
    ("q4_K_M", "Q4_K_M"), ("Q4_K_M", "Q4_K_M"), ("q4_k_s", "Q4_K_S"), ("q8_0", "Q8_0"), ("q4_k", "Q4_K_M"),
    ("f16", "F16"), ("F32", "F32"), ("bf16", "BF16"),
])
def test_the_types_ollama_takes_in_any_case(asked: str, name: str) -> None:
    assert to_spec(CreateRequest(from_="m", quantize=asked), trusted=False, base_dir=None).quantize == name


@pytest.mark.parametrize("asked", ["q5_0", "Q2_K", "iq4_xs", "q4", " q8"])
def test_other_types_are_refused_in_ollamas_words(asked: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_spec(CreateRequest(from_="m", quantize=asked), trusted=False, base_dir=None)
    assert str(caught.value) == (f"unsupported quantization type {asked.strip().upper()} - supported types are "
                                 "F32, F16, Q4_K_S, Q4_K_M, Q8_0")


def test_the_old_field_name_quantization_is_read_too() -> None:
    assert to_spec(CreateRequest(from_="m", quantization="q8_0"), trusted=False, base_dir=None).quantize == "Q8_0"


def tiny_with_type(path: Path, file_type: gguf.LlamaFileType) -> Path:
    write_tiny_gguf(path)
    data = path.read_bytes()
    key = b"general.file_type"
    at = data.index(key) + len(key) + 4  # the key, then its u32 value type, then the value
    path.write_bytes(data[:at] + int(file_type).to_bytes(4, "little") + data[at + 4:])
    return path


@pytest.mark.parametrize("file_type", [gguf.LlamaFileType.MOSTLY_Q4_1, gguf.LlamaFileType.MOSTLY_Q8_0,
                                       gguf.LlamaFileType.MOSTLY_Q4_K_M])
def test_a_quantized_source_is_refused_in_ollamas_words(tmp_path: Path, file_type: gguf.LlamaFileType) -> None:
    store = ModelStore(tmp_path / "models")
    source = tiny_with_type(tmp_path / "q.gguf", file_type)
    with pytest.raises(InvalidRequest, match="^quantization is only supported for F16, BF16 and F32 models$"):
        list(store.create("q", CreateRequest(from_=str(source), quantize="q4_K_M")))
    assert store.find("q") is None


def test_a_model_already_of_the_asked_type_is_kept_as_it_is(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    statuses = [s.status for s in store.create("same", CreateRequest(from_=str(write_tiny_gguf(tmp_path / "t.gguf")),
                                                                     quantize="f32"))]
    assert not any(s.startswith("quantizing") for s in statuses)
    assert statuses[-1] == "success"


def test_a_file_llama_cpp_cannot_quantize_leaves_no_temp_file_and_no_blob(tmp_path: Path) -> None:
    """The tiny GGUF has no attention sizes: llama.cpp's loader refuses it in the child process, the
    create fails with llama.cpp's reason, and the blobs dir holds only the imported source."""
    store = ModelStore(tmp_path / "models")
    with pytest.raises(EngineError, match="llama.cpp could not quantize the model: .+"):
        list(store.create("t", CreateRequest(from_=str(write_tiny_gguf(tmp_path / "t.gguf")), quantize="q8_0")))
    assert [p.name for p in store.blobs.directory.iterdir() if p.name.startswith(TMP_PREFIX)] == []
    assert len(store.blobs.all_digests()) == 1
    assert store.find("t") is None


@pytest.fixture
def fake_llama_quantize(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand in for the child: it 'quantizes' by writing the tiny GGUF marked Q8_0, logging 2 tensors."""
    from ollama_magic.store import quantize

    def run(source: Path, target: Path, ftype: int):  # noqa: ANN202 - a generator
        yield 1, 2
        tiny_with_type(target, gguf.LlamaFileType(ftype))
        yield 2, 2

    monkeypatch.setattr(quantize, "run_quantize", run)


@pytest.mark.parametrize("noprune", ["", "1"])
def test_the_source_a_create_imported_goes_once_the_quantized_model_replaces_it(
        tmp_path: Path, fake_llama_quantize: None, monkeypatch: pytest.MonkeyPatch, noprune: str) -> None:
    monkeypatch.setenv("OLLAMA_NOPRUNE", noprune)
    store = ModelStore(tmp_path / "models")
    source = write_tiny_gguf(tmp_path / "t.gguf")
    updates = list(store.create("q", CreateRequest(from_=str(source), quantize="q8_0")))
    quantizing = [u for u in updates if u.status == "quantizing F32 model to Q8_0"]
    total = source.stat().st_size
    assert [(u.completed, u.total) for u in quantizing] == [(0, total), (total // 2, total), (total, total)]
    assert store.find("q").details.quantization_level == "Q8_0"
    assert store.blobs.has(hash_file(source)) is bool(noprune)  # OLLAMA_NOPRUNE keeps it, as every prune


def test_the_source_another_model_uses_stays(tmp_path: Path, fake_llama_quantize: None) -> None:
    store = ModelStore(tmp_path / "models")
    list(store.create("base", CreateRequest(from_=str(write_tiny_gguf(tmp_path / "t.gguf")))))
    list(store.create("q", CreateRequest(from_="base", quantize="q8_0")))
    assert store.find("q").details.quantization_level == "Q8_0"
    assert store.find("base").model_path.is_file()


def write_f16_gguf(path: Path) -> Path:
    """An F16 GGUF whose one tensor (64x64 F16, 8 KiB) is most of the file."""
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_tensor("token_embd.weight", np.ones((64, 64), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_whole_f16_file_passes_the_check(tmp_path: Path) -> None:
    from ollama_magic.store.quantize import check_output

    check_output(write_f16_gguf(tmp_path / "f16.gguf"), gguf.LlamaFileType.MOSTLY_F16, 1)


def test_a_file_cut_in_its_data_fails_the_check(tmp_path: Path) -> None:
    """The header is intact, the last bytes of the tensor's data are missing: that file is not
    adopted as a blob. (Tensor offsets count from the data section, after the header.)"""
    from ollama_magic.store.quantize import check_output

    path = write_f16_gguf(tmp_path / "f16.gguf")
    data = path.read_bytes()
    path.write_bytes(data[:-16])
    with pytest.raises(EngineError, match="shorter than its tensors"):
        check_output(path, gguf.LlamaFileType.MOSTLY_F16, 1)


_PARENT = r"""
import os, sys
from pathlib import Path
from ollama_magic.store.quantize import run_quantize
print("started", flush=True)
for _ in run_quantize(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])):
    pass
"""


def test_the_quantize_child_goes_when_its_parent_is_killed(tmp_path: Path) -> None:
    """A kernel or server killed mid-quantize (SIGKILL, the OOM killer) runs no cleanup: the child
    must notice by itself and stop, not burn CPU for minutes on a file nobody will adopt. The source
    is a FIFO nobody writes, so the child is stuck inside llama.cpp's open of it, as it would be in a
    long quantize."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    source = tmp_path / "source.gguf"
    os.mkfifo(source)
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, str(source), str(tmp_path / "out.gguf"),
                               str(int(gguf.LlamaFileType.MOSTLY_Q8_0))],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    children: list[psutil.Process] = []
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "started\n"
        deadline = time.monotonic() + 30
        while not children and time.monotonic() < deadline:
            children = psutil.Process(parent.pid).children()
            time.sleep(0.05)
        assert len(children) == 1
        time.sleep(3)  # the child is past its imports, blocked in llama.cpp
        assert children[0].is_running() and children[0].status() != psutil.STATUS_ZOMBIE
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        gone, alive = psutil.wait_procs(children, timeout=5)
        assert alive == []
    finally:
        for child in children:
            if child.is_running():
                child.kill()
        if parent.poll() is None:
            parent.kill()
