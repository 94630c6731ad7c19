"""A real OCI registry for tests and benchmarks: Debian's ``docker-registry`` (the CNCF distribution
registry 2.8) on 127.0.0.1, storing into a temp directory. It accepts Ollama's manifests as they are,
which is what makes it a fair stand-in for registry.ollama.ai here, where no registry is reachable.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Mapping

import httpx

BINARY = "docker-registry"
PACKAGE = "docker-registry"  # Debian's package of the distribution registry


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DockerRegistry:
    """``docker-registry serve`` over ``root``; ``htpasswd`` (a file of bcrypt lines) turns on its
    basic auth, ``token_auth`` (its ``auth: token:`` options: realm, service, issuer, rootcertbundle)
    its bearer-token auth. ``log`` holds its access log (one line per request, at info level)."""

    def __init__(self, root: Path, *, htpasswd: Path | None = None,
                 token_auth: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.storage = root / "storage"
        self.log = root / "registry.log"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.htpasswd = htpasswd
        self.token_auth = dict(token_auth or {})
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which(BINARY) is not None

    def start(self) -> "DockerRegistry":
        self.root.mkdir(parents=True, exist_ok=True)
        auth = ""
        if self.htpasswd:
            auth = f"auth:\n  htpasswd:\n    realm: ollama-magic-tests\n    path: {self.htpasswd}\n"
        elif self.token_auth:
            auth = "auth:\n  token:\n" + "".join(f"    {key}: {value}\n" for key, value in self.token_auth.items())
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n{auth}"
        )
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen([BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("docker-registry did not come up")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def blob_data(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (its filesystem driver's layout)."""
        hex_digest = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"

    def requests_logged(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if "response completed" in line]

    def __enter__(self) -> "DockerRegistry":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
