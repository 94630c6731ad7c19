"""A process killed in the middle of a write leaves the old state or the new one, never a half.

The writer runs in a child process that dies with os._exit (no cleanup, no finally blocks: as close
to a power cut as a test can get) at the moment the data has been written but not yet renamed.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import write_tiny_gguf
from ollama_magic.store import ModelStore

CRASHING_WRITER = textwrap.dedent(
    """
    import os, sys
    import ollama_magic.files as atomic
    from ollama_magic.store import ModelStore

    real_replace = os.replace
    def crash(src, dst):
        if os.path.relpath(dst, sys.argv[1]).startswith({target!r}):
            os._exit(137)  # killed after writing, before the rename
        real_replace(src, dst)
    atomic.os.replace = crash

    store = ModelStore(sys.argv[1])
    {action}
    """
)


def run_crashing(root: Path, target: str, action: str) -> int:
    code = CRASHING_WRITER.format(target=target, action=action)
    return subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True).returncode


def test_crash_during_blob_import_leaves_no_visible_blob(tmp_path: Path) -> None:
    root = tmp_path / "models"
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    assert run_crashing(root, "blobs/sha256-", f"store.blobs.import_file({str(gguf)!r})") == 137

    store = ModelStore(root)
    assert store.blobs.all_digests() == set()
    assert store.list().models == []
    leftovers = list(store.blobs.directory.iterdir())
    assert leftovers and all(p.name.startswith(".tmp-om-") for p in leftovers)  # invisible temp file
    # the next writer sweeps temp files of dead processes away
    list(store.create("tiny", f"FROM {gguf}"))
    assert not any(p.name.startswith(".tmp-om-") for p in store.blobs.directory.iterdir())


def test_crash_while_replacing_a_manifest_keeps_the_old_model(tmp_path: Path) -> None:
    root = tmp_path / "models"
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    store = ModelStore(root)
    list(store.create("m", f"FROM {gguf}\nSYSTEM old"))
    before = store.find("m").manifest_path.read_bytes()

    action = f"list(store.create('m', 'FROM {gguf}\\nSYSTEM new'))"
    assert run_crashing(root, "manifests/", action) == 137

    record = ModelStore(root).find("m")
    assert record.manifest_path.read_bytes() == before
    assert record.system == "old"
    assert [m.name for m in ModelStore(root).list().models] == ["m:latest"]


def test_crash_while_creating_a_new_model_leaves_no_model(tmp_path: Path) -> None:
    root = tmp_path / "models"
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    assert run_crashing(root, "manifests/", f"list(store.create('fresh', 'FROM {gguf}'))") == 137
    assert ModelStore(root).list().models == []
