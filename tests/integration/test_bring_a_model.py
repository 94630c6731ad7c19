"""The README's three ways to bring a real model, each as a user would do it from a notebook:
a GGUF file, the store Ollama pulled its models into (read and run in place), and a server."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from ollama_magic.defaults import SMOLLM2_TEMPLATE

pytestmark = pytest.mark.integration
SHORT = "--seed 1 --num-predict 16"


def _blob(blobs: Path, data: bytes | None = None, *, link: Path | None = None) -> tuple[str, int]:
    """A blob as Ollama's ``manifest.NewLayer`` leaves it: ``blobs/sha256-<hex>``, mode 0644."""
    if link is not None:
        digest = hashlib.sha256(link.read_bytes()).hexdigest()
        os.link(link, blobs / f"sha256-{digest}")  # the weights: hard-linked, a pull would have written them
        return f"sha256:{digest}", link.stat().st_size
    assert data is not None
    digest = hashlib.sha256(data).hexdigest()
    path = blobs / f"sha256-{digest}"
    path.write_bytes(data)
    path.chmod(0o644)
    return f"sha256:{digest}", len(data)


def ollama_pulled_store(root: Path, gguf: Path) -> Path:
    """``~/.ollama/models`` after ``ollama pull smollm2:135m``, written the way Ollama writes it (Go's
    compact JSON, its media types and config fields), independently of our own store code."""
    blobs = root / "blobs"
    blobs.mkdir(parents=True)
    layers = []
    for media_type, digest_size in [
        ("application/vnd.ollama.image.model", _blob(blobs, link=gguf)),
        ("application/vnd.ollama.image.template", _blob(blobs, SMOLLM2_TEMPLATE.encode())),
        ("application/vnd.ollama.image.license", _blob(blobs, b"Apache License\nVersion 2.0, January 2004\n")),
        ("application/vnd.ollama.image.params", _blob(blobs, b'{"stop":["<|im_start|>","<|im_end|>"]}')),
    ]:
        layers.append({"mediaType": media_type, "digest": digest_size[0], "size": digest_size[1]})
    config = {"model_format": "gguf", "model_family": "llama", "model_families": ["llama"], "model_type": "134.52M",
              "file_type": "Q4_1", "architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]}}
    config_digest, config_size = _blob(blobs, json.dumps(config, separators=(",", ":")).encode())
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config_digest,
                           "size": config_size},
                "layers": layers}
    path = root / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m"
    path.parent.mkdir(parents=True)
    path.write_bytes(json.dumps(manifest, separators=(",", ":")).encode())
    return root


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino)
            for p in sorted(root.rglob("*"))}


def test_a_gguf_file_becomes_a_model_with_ollama_create(notebook_shell, tmp_path: Path, smollm2_gguf: Path) -> None:
    ip = notebook_shell(tmp_path / "models")
    downloaded = tmp_path / "Downloads" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    downloaded.parent.mkdir()
    downloaded.symlink_to(smollm2_gguf)
    assert ip.run_line_magic("ollama", f"create mine --from {downloaded}") == "created mine"
    assert "im_start" in ip.run_line_magic("ollama", "show mine --template")  # the GGUF's own chat template
    reply = ip.run_cell_magic("chat", f"-m mine {SHORT}", "Why is the sky blue?")
    assert reply.model == "mine" and reply.strip() and "<|im_" not in reply
    assert ip.run_line_magic("ollama", "use mine") == "%%chat now uses mine:latest"


def test_ollamas_own_store_is_read_and_run_in_place(notebook_shell, tmp_path: Path, smollm2_gguf: Path) -> None:
    root = ollama_pulled_store(tmp_path / "dot-ollama" / "models", smollm2_gguf)
    before = snapshot(root)
    ip = notebook_shell(root)  # OLLAMA_MODELS=~/.ollama/models
    assert list(ip.run_line_magic("ollama", "list").name) == ["smollm2:135m"]
    assert ip.run_line_magic("ollama", "show smollm2:135m --template") == SMOLLM2_TEMPLATE
    assert '"<|im_end|>"' in ip.run_line_magic("ollama", "show smollm2:135m --parameters")
    reply = ip.run_cell_magic("chat", SHORT, "Why is the sky blue?")  # the default model: Ollama's copy
    assert reply.model == "smollm2:135m" and reply.strip()
    [running] = ip.run_line_magic("ollama", "ps").itertuples()
    assert running.name == "smollm2:135m"
    assert snapshot(root) == before  # nothing copied, registered or rewritten in Ollama's store


def test_a_server_runs_everything_after_ollama_connect(notebook_shell, tmp_path: Path, clone_registered,
                                                        serve_process) -> None:
    served = serve_process(clone_registered(tmp_path / "server-models").root)  # the bigger machine
    ip = notebook_shell(tmp_path / "kernel-models")
    assert ip.run_line_magic("ollama", f"connect {served.url}").startswith(f"connected to {served.url}")
    try:
        reply = ip.run_cell_magic("chat", SHORT, "Why is the sky blue?")
        assert reply.model == "smollm2:135m" and reply.strip()
        assert list(ip.run_line_magic("ollama", "ps").name) == ["smollm2:135m"]  # loaded over there
        status = ip.run_line_magic("ollama", "status")
        assert f"backend:      remote {served.url}" in status
        assert "loaded:       smollm2:135m (0/31 layers on devices, 100% CPU: CPU " in status  # the server's answer
    finally:
        ip.run_line_magic("ollama", "disconnect")
    assert not (tmp_path / "kernel-models").exists()  # the kernel's own store was never needed
