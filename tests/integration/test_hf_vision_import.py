"""Importing a Hugging Face vision model directory: the text GGUF and its projector, both registered.

The directory is a tiny Idefics3 (SmolVLM's architecture) with random weights, written by
``tests/fixtures/tiny_idefics3.py`` in a child process; llama.cpp's converter runs for real on it, twice
(text, then ``--mmproj``), and libmtmd runs the result. Its answers are meaningless; the counts are not.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from ollama_magic import Engine
from ollama_magic.errors import InvalidRequest
from ollama_magic.store import ModelStore

from .test_vision import RED, png

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
from tiny_idefics3 import TEXT_WIDTH, TOKENS_PER_IMAGE  # noqa: E402

OPTS = {"num_ctx": 512, "num_predict": 3, "seed": 7}
PROJECTOR = "application/vnd.ollama.image.projector"


@pytest.fixture(scope="module")
def hf_vision_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "tiny-idefics3"
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "fixtures" / "tiny_idefics3.py"), str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with Engine(ModelStore(tmp_path_factory.mktemp("hfstore") / "models")) as engine:
        yield engine


def test_a_hf_vision_directory_imports_with_its_projector_and_runs_images(engine: Engine, hf_vision_dir: Path) -> None:
    engine.create("tiny-idefics3", from_=str(hf_vision_dir))
    shown = engine.show("tiny-idefics3")
    assert "vision" in shown.capabilities
    assert shown.projector_info["clip.projector_type"] == "idefics3"
    assert shown.projector_info["clip.vision.projection_dim"] == shown.model_info["llama.embedding_length"] == TEXT_WIDTH
    assert "clip.vision.block_count" not in shown.model_info  # the text GGUF holds no vision tower
    assert shown.modelfile.count("\nFROM ") == 2  # as if written with two FROM lines
    record = engine.store.find("tiny-idefics3")
    assert [layer.media_type for layer in record.manifest.layers].count(PROJECTOR) == 1

    with_image = engine.generate("tiny-idefics3", "Describe it.", images=[RED], options=OPTS)
    text_tokens = len(with_image.context) - with_image.eval_count
    assert with_image.prompt_eval_count == text_tokens + TOKENS_PER_IMAGE
    chat = engine.chat("tiny-idefics3", [{"role": "user", "content": "And these?",
                                           "images": [RED, png((20, 200, 20))]}], options=OPTS)
    assert chat.prompt_eval_count > 2 * TOKENS_PER_IMAGE


def test_a_projector_that_fails_to_convert_registers_nothing(engine: Engine, hf_vision_dir: Path,
                                                             tmp_path: Path) -> None:
    """No preprocessor_config.json (its image mean and std): the text side converts, the projector
    does not; the error says so in one line and neither the model nor a blob is left behind."""
    broken = shutil.copytree(hf_vision_dir, tmp_path / "no-preprocessor")
    (broken / "preprocessor_config.json").unlink()
    blobs_before = set(engine.store.blobs.directory.iterdir()) if engine.store.blobs.directory.exists() else set()
    with pytest.raises(InvalidRequest) as failed:
        engine.create("half-vision", modelfile="FROM ./no-preprocessor\n", base_dir=tmp_path)
    message = str(failed.value)
    assert "projector" in message and "\n" not in message
    assert engine.store.find("half-vision") is None
    assert set(engine.store.blobs.directory.iterdir()) == blobs_before
