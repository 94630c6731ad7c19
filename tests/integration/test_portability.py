"""The package on Windows and macOS, shown on Linux (CI runs on Linux only): each test runs it in a
child Python whose ``sitecustomize`` (tests/fixtures/not_posix) takes away the POSIX-only modules and
calls ollama_magic must not need (``fcntl``, ``os.sysconf``, ``os.kill(pid, 0)``, ``os.open`` of a
directory, ``os.sched_getaffinity``, ``os.pread``/``os.pwrite``, ``:`` in a directory name), and
checks what a user does first: load the extension, chat, embed, list/create/remove models, and serve.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.integration

_ROOT = Path(__file__).resolve().parents[2]
SIMULATION = _ROOT / "tests" / "fixtures" / "not_posix"

#: Run in the child: the magics in a plain IPython shell, what they showed written to ``results``.
NOTEBOOK = r"""
import json, os, sys
from IPython.core.interactiveshell import InteractiveShell

results = {}
shell = InteractiveShell.instance()
shell.run_line_magic("load_ext", "ollama_magic")
reply = shell.run_cell_magic("chat", "-m smollm2:135m --seed 1 --num-predict 4", "Say hi.")
results["chat"] = {"text": str(reply), "eval_count": reply.stats["eval_count"]}
frame = shell.run_line_magic("embed", "['a cat', 'a dog']")
results["embed"] = [len(vector) for vector in frame.embedding]
results["listed"] = sorted(shell.run_line_magic("ollama", "list").name)
results["created"] = shell.run_line_magic("ollama", "create localhost:5000/ns/terse --from smollm2:135m --system 'Be terse.'")
results["listed_after_create"] = sorted(shell.run_line_magic("ollama", "list").name)
results["terse"] = str(shell.run_cell_magic("chat", "-m localhost:5000/ns/terse --seed 1 --num-predict 2 --no-history", "Hi."))
shell.run_line_magic("ollama", "rm localhost:5000/ns/terse")
results["listed_after_rm"] = sorted(shell.run_line_magic("ollama", "list").name)
shell.run_line_magic("unload_ext", "ollama_magic")
with open(sys.argv[1], "w") as fh:
    json.dump(results, fh)
"""


def simulated_env(models_root: Path, **extra: str) -> dict[str, str]:
    """The environment of a child that runs ollama_magic as if on Windows (see the fixture's docstring)."""
    path = os.pathsep.join([str(SIMULATION), str(_ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OLLAMA_MODELS": str(models_root), **extra}


@pytest.fixture
def models_root(tmp_path: Path, clone_registered) -> Path:
    return clone_registered(tmp_path / "models").root


PROBE = r"""
import os, sys

def outcome(call):
    try:
        call()
        return "ran"
    except BaseException as exc:
        return type(exc).__name__

probes = {
    "import fcntl": lambda: exec("import fcntl", globals()),
    "os.sysconf": lambda: os.sysconf("SC_PAGE_SIZE"),
    "os.kill(pid, 0)": lambda: os.kill(os.getpid(), 0),
    "os.open(directory)": lambda: os.close(os.open(".", os.O_RDONLY)),
    "os.sched_getaffinity": lambda: os.sched_getaffinity(0),
    "os.pwrite": lambda: os.pwrite,
    "mkdir a:b": lambda: os.mkdir("a:b"),
}
print({name: outcome(call) for name, call in probes.items()})
"""


def test_the_simulation_takes_away_what_it_says(tmp_path: Path) -> None:
    """From code in ollama_magic each call fails as Windows would make it fail; from a library
    (here ``__main__``) only what Windows lacks altogether is gone. A simulation that silently did
    nothing would prove nothing."""
    as_package = f"exec({PROBE!r}, {{'__name__': 'ollama_magic.probe'}})"
    runs = [subprocess.run([sys.executable, "-c", code], env=simulated_env(tmp_path), capture_output=True,
                           text=True, timeout=60, cwd=tmp_path) for code in (as_package, PROBE)]
    for done in runs:
        assert done.returncode == 0, done.stderr
    from_package, from_library = (eval(done.stdout) for done in runs)  # noqa: S307 - our own dict's repr
    assert from_package == {"import fcntl": "ModuleNotFoundError", "os.sysconf": "AttributeError",
                            "os.kill(pid, 0)": "RuntimeError", "os.open(directory)": "PermissionError",
                            "os.sched_getaffinity": "AttributeError", "os.pwrite": "AttributeError",
                            "mkdir a:b": "OSError"}
    assert from_library == {**from_package, "import fcntl": "ran", "os.sysconf": "ran", "os.kill(pid, 0)": "ran",
                            "os.open(directory)": "ran"}


def test_the_extension_chats_embeds_and_manages_models_without_posix_calls(models_root: Path, tmp_path: Path) -> None:
    blobs = models_root / "blobs"
    live = blobs / f".tmp-om-{os.getpid()}-000000000000"  # a writer that still runs: this test
    live.write_bytes(b"half a blob")
    script, results = tmp_path / "notebook.py", tmp_path / "results.json"
    script.write_text(NOTEBOOK)
    env = simulated_env(models_root, OLLAMA_MAGIC_CONVERSATIONS=str(tmp_path / "conversations"))
    done = subprocess.run([sys.executable, str(script), str(results)], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(results.read_text())
    assert seen["chat"]["eval_count"] == 4 and seen["chat"]["text"]
    assert seen["embed"] == [384, 384]
    assert {"smollm2:135m", "all-minilm:latest"} <= set(seen["listed"])
    assert seen["created"] == "created localhost:5000/ns/terse"
    assert "localhost:5000/ns/terse:latest" in seen["listed_after_create"] and seen["terse"]
    assert seen["listed_after_rm"] == seen["listed"]
    assert live.exists()  # the stale-temp-file sweep asked psutil, and kept a live writer's file
    assert not [p for p in models_root.rglob("*") if ":" in p.name]


def test_serve_answers_and_stops_without_posix_calls(models_root: Path) -> None:
    port = _free_port()
    env = simulated_env(models_root, OLLAMA_HOST=f"127.0.0.1:{port}")
    proc = subprocess.Popen([sys.executable, "-m", "ollama_magic", "serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[1][-4000:]
            try:
                version = requests.get(f"{url}/api/version", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.1)
        assert version.status_code == 200 and version.json()["version"]
        tags = requests.get(f"{url}/api/tags", timeout=10)
        assert tags.status_code == 200
        assert {"smollm2:135m", "all-minilm:latest"} <= {m["name"] for m in tags.json()["models"]}
        proc.send_signal(signal.SIGINT)  # Ctrl-C, as on every OS
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "Traceback" not in err, err[-4000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
