"""One blob from the store to a registry, as Ollama's ``server/upload.go`` sends it.

``HEAD`` first (a blob the repository has is skipped); then an upload session (``POST
.../blobs/uploads/``), asking for a cross-repository mount when another repository on that registry
is known to hold the blob (``201 Created`` means mounted: nothing to send). Blobs up to one part
(100 MB) go in one monolithic ``PUT ...?digest=``; larger ones in ``PATCH`` chunks with
``Content-Range``, then an empty ``PUT`` that names the digest. Bodies are streamed from the file.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Iterator

import httpx

from ..errors import NotFound, RegistryError
from ..store.blobs import CHUNK
from ..types import ProgressResponse
from .client import RegistryClient
from .download import MIN_PART, plan_parts


class BlobUpload:
    def __init__(self, client: RegistryClient, path: Path, digest: str, size: int,
                 mount_from: str | None = None) -> None:
        self.client, self.path, self.digest, self.total = client, path, digest, size
        self.mount_from = mount_from
        self.completed = 0
        self.mounted = False
        self.skipped = False

    def progress(self) -> ProgressResponse:
        return ProgressResponse(status=f"pushing {self.digest[7:19]}", digest=self.digest, total=self.total,
                                completed=self.completed)

    def run(self, cancel: threading.Event) -> None:
        ref = self.client.ref
        what = f"push {self.digest[7:19]}"
        try:
            self.client.send("HEAD", ref.url("blobs", self.digest), what=what).close()
            self.skipped = True
            self.completed = self.total
            return
        except NotFound:
            pass
        params = {"mount": self.digest, "from": self.mount_from} if self.mount_from else None
        response = self.client.send("POST", ref.url("blobs", "uploads") + "/", params=params, what=what)
        if response.status_code == 201:
            self.mounted = True
            self.completed = self.total
            return
        location = self._location(response)
        if self.total <= MIN_PART:
            self._put(location, self._body(0, self.total, cancel), self.total, what)
            return
        for part in plan_parts(self.total):
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(part.size),
                       "Content-Range": f"{part.offset}-{part.offset + part.size - 1}"}
            response = self.client.send("PATCH", str(location), headers=headers,
                                        content=self._body(part.offset, part.size, cancel), what=what)
            location = self._location(response)
        self._put(location, b"", 0, what)

    def _put(self, location: httpx.URL, body: bytes | Iterator[bytes], size: int, what: str) -> None:
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        self.client.send("PUT", str(location.copy_merge_params({"digest": self.digest})), headers=headers,
                         content=body, what=what).close()
        self.completed = self.total

    def _location(self, response: httpx.Response) -> httpx.URL:
        location = response.headers.get("docker-upload-location") or response.headers.get("location")
        if not location:
            raise RegistryError(f"{self.client.ref.name.host} started an upload without a Location")
        return response.request.url.join(location)

    def _body(self, offset: int, size: int, cancel: threading.Event) -> Iterator[bytes]:
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            left = size
            while left > 0:
                if cancel.is_set():
                    raise RegistryError("push cancelled")
                block = fh.read(min(CHUNK, left))
                if not block:
                    raise RegistryError(f"{self.path} is shorter than its manifest says")
                left -= len(block)
                self.completed += len(block)
                yield block
