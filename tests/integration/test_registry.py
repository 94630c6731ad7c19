"""Pull and push over Ollama's registry protocol against a real registry: Debian's ``docker-registry``
(the CNCF distribution registry) started on 127.0.0.1 for the session. gemma3:270m is pushed once,
then pulled back through every front end (Engine, /api/pull with the official client and with plain
HTTP, the CLI, ``%ollama pull``, the Models panel, ``%ollama connect`` + pull on a server).

Without the package these tests skip, naming it; ``.ci/run`` sets OLLAMA_MAGIC_REQUIRE_REGISTRY=1, which
turns the skip into a failure, so CI cannot pass without having run them.
"""

from __future__ import annotations

import filecmp
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import ollama
import pytest
import requests

from bench._registry import PACKAGE, DockerRegistry
from ollama_magic.engine import Engine
from ollama_magic.errors import DigestMismatch, NotFound, Unauthorized
from ollama_magic.registry.download import PARTIAL_PREFIX
from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"
REQUIRE_ENV = "OLLAMA_MAGIC_REQUIRE_REGISTRY"
PULL_STATUSES = ["pulling manifest", "verifying sha256 digest", "writing manifest", "success"]


def _missing(what: str, package: str) -> None:
    message = f"needs {what} from the Debian package {package!r} (apt-get install {package})"
    if os.environ.get(REQUIRE_ENV):
        pytest.fail(f"{message}; {REQUIRE_ENV} is set, so a skip here is a failure")
    pytest.skip(message)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    if not DockerRegistry.available():
        _missing("the docker-registry binary", PACKAGE)
    with DockerRegistry(tmp_path_factory.mktemp("registry")) as reg:
        yield reg


@pytest.fixture(scope="session")
def pushed(registry: DockerRegistry, clone_registered, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """gemma3:270m pushed once to the session's registry as HOST/library/gemma3:270m."""
    store = clone_registered(tmp_path_factory.mktemp("pusher") / "models")
    name = f"{registry.host}/library/{GEMMA}"
    with Engine(store) as engine:
        engine.copy(GEMMA, name)
        statuses = list(engine.push(name, insecure=True, stream=True))
    return {"name": name, "store": store, "statuses": statuses, "record": store.find(name)}


def blobs_identical(pulled: ModelStore, name: str, original: ModelStore) -> None:
    """Every blob of ``name`` in ``pulled`` has the same bytes as the original's, and the manifest too."""
    mine, theirs = pulled.find(name), original.find(name)
    assert mine is not None and theirs is not None
    assert mine.manifest_path.read_bytes() == theirs.manifest_path.read_bytes()
    for digest in theirs.manifest.digests:
        assert filecmp.cmp(pulled.blobs.require(digest), original.blobs.require(digest), shallow=False), digest


def no_stray_files(store: ModelStore) -> None:
    """No partial download left, and every ``sha256-`` file holds exactly the bytes its name says."""
    directory = store.blobs.directory
    assert not list(directory.glob(f"{PARTIAL_PREFIX}*"))
    for path in directory.glob("sha256-*"):
        assert "sha256-" + hashlib.sha256(path.read_bytes()).hexdigest() == path.name


def check_pull_progress(statuses: list[Any], record: Any) -> None:
    """Ollama's shapes: the fixed statuses in order, and per blob ``pulling <12 hex>`` with its
    digest, total and completed, the last one complete."""
    fixed = [s.status for s in statuses if not s.status.startswith("pulling ") or s.status == "pulling manifest"]
    assert [x for x in fixed if x in PULL_STATUSES] == PULL_STATUSES and fixed[-1] == "success"
    layers = {layer.digest: layer.size for layer in (*record.manifest.layers, record.manifest.config)}
    for digest, size in layers.items():
        mine = [s for s in statuses if s.digest == digest]
        assert mine and all(s.status == f"pulling {digest[7:19]}" and s.total == size for s in mine)
        assert mine[-1].completed == size


def answer(store: ModelStore, name: str) -> str:
    with Engine(store) as engine:
        return engine.generate(name, "The capital of France is", options={"num_predict": 6, "temperature": 0,
                                                                          "seed": 1}).response


# ---- push ------------------------------------------------------------------------------------------

def test_push_reports_ollamas_progress_and_the_registry_serves_our_manifest(pushed, registry) -> None:
    statuses = pushed["statuses"]
    assert statuses[0].status == "retrieving manifest"
    assert [s.status for s in statuses[-2:]] == ["pushing manifest", "success"]
    record = pushed["record"]
    for layer in (*record.manifest.layers, record.manifest.config):
        mine = [s for s in statuses if s.digest == layer.digest]
        assert mine[-1].status == f"pushing {layer.digest[7:19]}" and mine[-1].completed == layer.size
    served = httpx.get(f"{registry.url}/v2/library/gemma3/manifests/270m",
                       headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert served.status_code == 200 and served.content == record.manifest_path.read_bytes()
    model = record.manifest.layer("application/vnd.ollama.image.model")
    assert registry.blob_data(model.digest).stat().st_size == model.size


def test_a_second_push_mounts_blobs_from_the_repository_that_has_them(pushed, registry) -> None:
    store: ModelStore = pushed["store"]
    mirror = f"{registry.host}/mirror/gemma3:270m"
    with Engine(store) as engine:
        engine.copy(pushed["name"], mirror)
        assert engine.push(mirror, insecure=True).status == "success"
    log = registry.requests_logged()
    mounts = [line for line in log if "/v2/mirror/gemma3/blobs/uploads/?mount=" in line]
    assert mounts and all("http.response.status=201" in line for line in mounts)
    assert not [line for line in log if "/v2/mirror/gemma3/blobs/uploads/" in line and
                ("http.request.method=PUT" in line or "http.request.method=PATCH" in line)]


# ---- pull through each front end ---------------------------------------------------------------

def test_engine_pull_brings_back_identical_blobs_and_the_model_answers(pushed, registered, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    with Engine(store) as engine:
        statuses = list(engine.pull(pushed["name"], insecure=True, stream=True))
        check_pull_progress(statuses, pushed["record"])
        listed = {m.model: m.digest for m in engine.list().models}
    assert listed == {pushed["name"]: pushed["record"].manifest_digest}  # the ID is the registry's digest
    blobs_identical(store, pushed["name"], pushed["store"])
    no_stray_files(store)
    assert answer(store, pushed["name"]) == answer(registered, GEMMA) != ""
    with Engine(store) as engine:  # again: every blob is there already, nothing downloads
        again = list(engine.pull(pushed["name"], insecure=True, stream=True))
    for layer in pushed["record"].manifest.layers:
        assert [s.completed for s in again if s.digest == layer.digest] == [layer.size]
    assert "removing unused layers" not in [s.status for s in again]


def test_official_client_pull_stream_against_our_server(pushed, serve_process, tmp_path: Path) -> None:
    server = serve_process(tmp_path / "models")
    client = ollama.Client(host=server.url)
    statuses = list(client.pull(pushed["name"], insecure=True, stream=True))
    check_pull_progress(statuses, pushed["record"])
    assert [m.model for m in client.list().models] == [pushed["name"]]
    one = requests.post(f"{server.url}/api/pull", json={"model": pushed["name"], "insecure": True, "stream": False},
                        timeout=120)
    assert one.status_code == 200 and one.text.count("\n") <= 1 and one.json() == {"status": "success"}
    blobs_identical(ModelStore(tmp_path / "models"), pushed["name"], pushed["store"])
    again = pushed["name"].replace("/library/", "/client/")
    client.copy(pushed["name"], again)
    pushes = [s.status for s in client.push(again, insecure=True, stream=True)]
    assert pushes[0] == "retrieving manifest" and pushes[-2:] == ["pushing manifest", "success"]
    assert ollama_manifest(again) == pushed["record"].manifest_path.read_bytes()


def ollama_manifest(name: str) -> bytes:
    """What the registry serves for ``host/ns/model:tag``."""
    host, namespace, rest = name.split("/")
    model, tag = rest.split(":")
    resp = httpx.get(f"http://{host}/v2/{namespace}/{model}/manifests/{tag}",
                     headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert resp.status_code == 200, resp.text
    return resp.content


def test_http_pull_streams_ndjson_lines_and_a_wrong_tag_is_a_404(pushed, serve_process, registry,
                                                                  tmp_path: Path) -> None:
    server = serve_process(tmp_path / "models")
    with requests.post(f"{server.url}/api/pull", json={"model": pushed["name"], "insecure": True},
                       stream=True, timeout=120) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in resp.iter_lines() if line]
    assert lines[0] == {"status": "pulling manifest"} and lines[-1] == {"status": "success"}
    blob_lines = [x for x in lines if "digest" in x]
    assert blob_lines and set(blob_lines[0]) == {"status", "digest", "total", "completed"}
    wrong = f"{registry.host}/library/gemma3:nope"
    resp = requests.post(f"{server.url}/api/pull", json={"model": wrong, "insecure": True, "stream": False},
                         timeout=60)
    assert resp.status_code == 404
    assert resp.json() == {"error": f"pull model manifest: file does not exist ({wrong} is not on {registry.host})"}


def _cli(*args: str, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ollama_magic", *args], capture_output=True, text=True,
                          timeout=300, **kwargs)


def test_cli_pull_and_a_wrong_tag(pushed, registry, tmp_path: Path) -> None:
    root = tmp_path / "models"
    done = _cli("--models", str(root), "pull", pushed["name"], "--insecure")
    assert done.returncode == 0, done.stderr
    model = pushed["record"].manifest.layer("application/vnd.ollama.image.model")
    assert "pulling manifest" in done.stderr and f"pulling {model.digest[7:19]}" in done.stderr
    assert done.stderr.rstrip().endswith("success")
    blobs_identical(ModelStore(root), pushed["name"], pushed["store"])
    wrong = _cli("--models", str(root), "pull", f"{registry.host}/library/gemma3:nope", "--insecure")
    assert wrong.returncode == 1
    assert wrong.stderr.splitlines()[-1] == (f"Error: pull model manifest: file does not exist "
                                             f"({registry.host}/library/gemma3:nope is not on {registry.host})")
    assert "Traceback" not in wrong.stderr
    again = pushed["name"].replace("/library/", "/cli/")
    assert _cli("--models", str(root), "cp", pushed["name"], again).returncode == 0
    pushed_again = _cli("--models", str(root), "push", again, "--insecure")
    assert pushed_again.returncode == 0, pushed_again.stderr
    assert pushed_again.stderr.splitlines()[0] == "retrieving manifest"
    assert pushed_again.stderr.rstrip().endswith("pushing manifest\nsuccess")
    assert ollama_manifest(again) == pushed["record"].manifest_path.read_bytes()


@pytest.fixture
def ip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An IPython shell with the extension loaded over an empty store."""
    from IPython.core.getipython import get_ipython
    from IPython.testing.globalipapp import start_ipython

    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "kernel-models"))
    monkeypatch.setenv("OLLAMA_MAGIC_CONVERSATIONS", str(tmp_path / "conversations"))
    shell = start_ipython() or get_ipython()
    shell.user_ns["__session__"] = str(tmp_path / "pull.ipynb")
    shell.extension_manager.load_extension("ollama_magic")
    yield shell
    shell.extension_manager.unload_extension("ollama_magic")


def test_ollama_magic_pull_shows_progress_in_the_cell(ip, pushed, tmp_path: Path) -> None:
    from IPython.utils.capture import capture_output

    with capture_output() as cap:
        result = ip.run_line_magic("ollama", f"pull {pushed['name']} --insecure")
    assert result == f"pulled {pushed['name']}"
    model = pushed["record"].manifest.layer("application/vnd.ollama.image.model")
    shown = cap.stdout + cap.stderr
    assert "pulling manifest" in shown and f"pulling {model.digest[7:19]}" in shown and "100%" in shown
    blobs_identical(ModelStore(tmp_path / "kernel-models"), pushed["name"], pushed["store"])
    again = pushed["name"].replace("/library/", "/kernel/")
    ip.run_line_magic("ollama", f"cp {pushed['name']} {again}")
    with capture_output() as cap:
        assert ip.run_line_magic("ollama", f"push {again} --insecure") == f"pushed {again}"
    assert "retrieving manifest" in cap.stdout and "success" in cap.stdout
    assert ollama_manifest(again) == pushed["record"].manifest_path.read_bytes()


def test_connect_then_pull_asks_the_server_to_pull(ip, pushed, serve_process, tmp_path: Path) -> None:
    server = serve_process(tmp_path / "server-models")
    ip.run_line_magic("ollama", f"connect {server.url}")
    try:
        assert ip.run_line_magic("ollama", f"pull {pushed['name']} --insecure") == f"pulled {pushed['name']}"
    finally:
        ip.run_line_magic("ollama", "disconnect")
    assert [m.model for m in ollama.Client(host=server.url).list().models] == [pushed["name"]]
    assert not (tmp_path / "kernel-models" / "manifests").exists()  # the kernel's own store got nothing
    blobs_identical(ModelStore(tmp_path / "server-models"), pushed["name"], pushed["store"])


def test_models_panel_pull_field(pushed, tmp_path: Path) -> None:
    from ollama_magic.notebook.conversations import ConversationStore
    from ollama_magic.notebook.session import NotebookSession
    from ollama_magic.notebook.widgets.models import ModelsPanel

    store = ModelStore(tmp_path / "models")
    with Engine(store) as engine:
        session = NotebookSession(shell=None, engine=engine, conversations=ConversationStore(tmp_path / "conv"))
        panel = ModelsPanel(session)
        try:
            panel.pull_name.value = pushed["name"]
            panel.pull_insecure.value = True
            panel.pull_button.click()
            assert panel.wait(300), "the pull did not finish"
            assert panel.selected == pushed["name"] and [r["name"] for r in panel.rows()] == [pushed["name"]]
            assert panel.pull_progress.value == 1.0 and panel.pull_progress.layout.display == "none"
            assert panel.pull_name.value == ""
        finally:
            panel.close()
    blobs_identical(store, pushed["name"], pushed["store"])


# ---- failures ----------------------------------------------------------------------------------------

def test_wrong_tag_is_a_one_line_404(pushed, registry, tmp_path: Path) -> None:
    wrong = f"{registry.host}/library/gemma3:nope"
    with Engine(ModelStore(tmp_path / "models")) as engine, pytest.raises(NotFound) as err:
        engine.pull(wrong, insecure=True)
    assert str(err.value) == f"pull model manifest: file does not exist ({wrong} is not on {registry.host})"
    assert err.value.status_code == 404


def test_corrupted_blob_in_the_registry_is_a_digest_error_and_nothing_is_kept(registry, tiny_gguf: Path,
                                                                             tmp_path: Path) -> None:
    source = ModelStore(tmp_path / "source")
    name = f"{registry.host}/corrupt/tiny:1"
    list(source.create(name, f"FROM {tiny_gguf}"))
    with Engine(source) as engine:
        assert engine.push(name, insecure=True).status == "success"
    layer = source.find(name).manifest.layer("application/vnd.ollama.image.model")
    data = registry.blob_data(layer.digest)
    original = data.read_bytes()
    corrupted = bytearray(original)
    corrupted[len(corrupted) // 2] ^= 0xFF
    data.write_bytes(bytes(corrupted))

    store = ModelStore(tmp_path / "models")
    try:
        with Engine(store) as engine, pytest.raises(DigestMismatch) as err:
            engine.pull(name, insecure=True)
    finally:
        data.write_bytes(original)  # the registry shares blobs between repositories: later tests need it
    got = "sha256:" + hashlib.sha256(corrupted).hexdigest()
    assert str(err.value) == f"digest mismatch, file must be downloaded again: want {layer.digest}, got {got}"
    assert not store.blobs.has(layer.digest) and store.find(name) is None
    no_stray_files(store)


def test_a_newer_version_replaces_the_old_one_and_its_unused_layers_are_removed(registry, tiny_gguf: Path,
                                                                               tmp_path: Path) -> None:
    source = ModelStore(tmp_path / "source")
    name = f"{registry.host}/team/tiny:1"
    store = ModelStore(tmp_path / "models")
    systems = {}
    for version in ("be brief", "be verbose"):
        list(source.create(name, f"FROM {tiny_gguf}\nSYSTEM {version}"))
        systems[version] = source.find(name).manifest.layer("application/vnd.ollama.image.system").digest
        with Engine(source) as engine:
            assert engine.push(name, insecure=True).status == "success"
        with Engine(store) as engine:
            statuses = [s.status for s in engine.pull(name, insecure=True, stream=True)]
    assert statuses[-3:] == ["writing manifest", "removing unused layers", "success"]
    assert store.find(name).system == "be verbose"
    assert not store.blobs.has(systems["be brief"]) and store.blobs.has(systems["be verbose"])
    no_stray_files(store)


def _saved_bytes(state: Path) -> int:
    try:
        return sum(part["completed"] for part in json.loads(state.read_text())["parts"])
    except (OSError, ValueError, KeyError):
        return 0


def test_kill_9_mid_pull_then_pull_again_resumes(pushed, tmp_path: Path) -> None:
    """A pull killed with SIGKILL leaves only a partial file (no ``sha256-`` name for data that was
    never verified); the next pull starts from what was saved and ends with the right blob."""
    model = pushed["record"].manifest.layer("application/vnd.ollama.image.model")
    for attempt in range(3):  # the kill has to land mid-download; on a fast machine retry a few times
        root = tmp_path / f"models-{attempt}"
        state = root / "blobs" / f"{PARTIAL_PREFIX}{model.digest[7:]}.json"
        proc = subprocess.Popen([sys.executable, "-m", "ollama_magic", "--models", str(root), "pull",
                                 pushed["name"], "--insecure"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while _saved_bytes(state) == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        saved = _saved_bytes(state)
        if 0 < saved < model.size:
            break
        shutil.rmtree(root, ignore_errors=True)
    else:
        pytest.fail("three pulls finished before they could be killed")
    store = ModelStore(root)
    assert not store.blobs.has(model.digest) and (store.blobs.directory / f"{PARTIAL_PREFIX}{model.digest[7:]}").exists()
    assert not [p for p in store.blobs.directory.glob("sha256-*")
                if "sha256-" + hashlib.sha256(p.read_bytes()).hexdigest() != p.name]

    with Engine(store) as engine:
        statuses = list(engine.pull(pushed["name"], insecure=True, stream=True))
    first = next(s for s in statuses if s.digest == model.digest and s.completed is not None)
    assert first.completed >= saved  # resumed: it started from what the killed pull had saved
    assert statuses[-1].status == "success"
    blobs_identical(store, pushed["name"], pushed["store"])
    no_stray_files(store)


# ---- authentication -------------------------------------------------------------------------------

def _htpasswd_line(user: str, password: str) -> str:
    if shutil.which("htpasswd"):
        return subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        import bcrypt
    except ImportError:
        _missing("htpasswd (to write the registry's password file)", "apache2-utils")
    return f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()}"


@pytest.fixture(scope="module")
def auth_registry(registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:
    root = tmp_path_factory.mktemp("auth-registry")
    (root / "htpasswd").write_text(_htpasswd_line("alice", "s3cret") + "\n")
    with DockerRegistry(root / "registry", htpasswd=root / "htpasswd") as reg:
        yield reg


def test_registry_with_htpasswd_auth_with_and_without_credentials(auth_registry, tiny_gguf: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  serve_process) -> None:
    source = ModelStore(tmp_path / "source")
    name = f"{auth_registry.host}/private/tiny:1"
    list(source.create(name, f"FROM {tiny_gguf}"))
    monkeypatch.delenv("OLLAMA_MAGIC_REGISTRY_AUTH", raising=False)
    with Engine(source) as engine:
        with pytest.raises(Unauthorized) as err:
            engine.push(name, insecure=True)
        assert str(err.value) == (f"unauthorized: access to private/tiny on {auth_registry.host} denied "
                                  "(no credentials given: set OLLAMA_MAGIC_REGISTRY_AUTH=user:password)")
        with pytest.raises(Unauthorized, match=r"\(the credentials were refused\)$"):
            engine.push(name, insecure=True, auth=("alice", "wrong"))
        assert engine.push(name, insecure=True, auth=("alice", "s3cret")).status == "success"

    store = ModelStore(tmp_path / "models")
    with Engine(store) as engine:
        with pytest.raises(Unauthorized):
            engine.pull(name, insecure=True)
        monkeypatch.setenv("OLLAMA_MAGIC_REGISTRY_AUTH", "alice:s3cret")
        assert engine.pull(name, insecure=True).status == "success"
    assert store.find(name) is not None

    monkeypatch.delenv("OLLAMA_MAGIC_REGISTRY_AUTH")
    server = serve_process(tmp_path / "server-models")  # started without credentials in its environment
    resp = requests.post(f"{server.url}/api/pull", json={"model": name, "insecure": True, "stream": False},
                         timeout=60)
    assert resp.status_code == 401 and resp.json()["error"].startswith("unauthorized: access to private/tiny")
