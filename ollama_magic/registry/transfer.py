"""Pull and push a whole model, step by step as Ollama's ``PullModel``/``PushModel`` report them.

Pull: ``pulling manifest``; ``pulling <12 hex>`` with total/completed per blob (blobs already in the
store are skipped, reported complete); ``verifying sha256 digest``; ``writing manifest`` (the bytes the
registry sent, so the model's ID is the registry's manifest digest, as in Ollama); ``removing unused
layers`` when an older version of the model used blobs nothing needs now; ``success``.

Push: ``retrieving manifest``; ``pushing <12 hex>`` per blob; ``pushing manifest``; ``success``.
"""

from __future__ import annotations

import threading
from typing import Iterator

from ..errors import ModelNotFound, OllamaMagicError, RegistryError
from ..store import ModelStore
from ..store.blobs import parse_digest
from ..store.manifests import MANIFEST_MEDIA_TYPE, Layer, Manifest
from ..types import ProgressResponse
from .client import MANIFEST_ACCEPT, RegistryClient, RegistryRef
from .download import BlobDownload
from .progress import run_with_progress
from .upload import BlobUpload


def _unique(manifest: Manifest) -> list[Layer]:
    seen: dict[str, Layer] = {}
    for layer in (*manifest.layers, manifest.config):
        seen.setdefault(layer.digest, layer)
    return list(seen.values())


def _read_manifest(data: bytes, ref: RegistryRef) -> Manifest:
    try:
        manifest = Manifest.from_bytes(data)
        for layer in _unique(manifest):
            parse_digest(layer.digest)
            if layer.size < 0:
                raise ValueError(layer.size)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise RegistryError(f"pull model manifest: {ref.name.host} sent a manifest for {ref.name.short} "
                            "that is not an Ollama model manifest") from None
    return manifest


def pull_model(store: ModelStore, name: str, *, insecure: bool = False,
               auth: tuple[str, str] | None = None) -> Iterator[ProgressResponse]:
    """Pull ``name`` into ``store``; a generator of Ollama's progress messages."""
    ref = RegistryRef.parse(name, insecure=insecure)
    yield ProgressResponse(status="pulling manifest")
    cancel = threading.Event()
    downloads: list[BlobDownload] = []
    with RegistryClient(ref, auth=auth) as client:
        response = client.send("GET", ref.url("manifests", ref.name.tag), headers={"Accept": MANIFEST_ACCEPT},
                               what="pull model manifest")
        data = response.content
        manifest = _read_manifest(data, ref)
        for layer in _unique(manifest):
            download = BlobDownload(client, store.blobs, layer.digest, layer.size)
            yield from run_with_progress(download.run, download.progress, cancel, f"pull {layer.digest[7:19]}")
            downloads.append(download)
    yield ProgressResponse(status="verifying sha256 digest")
    failures = []
    for download in downloads:  # the good blobs are kept (a later pull reuses them), a bad one never is
        try:
            download.commit()
        except OllamaMagicError as exc:
            failures.append(exc)
    if failures:
        raise failures[0]
    yield ProgressResponse(status="writing manifest")
    if store.install_manifest(ref.name, data):
        yield ProgressResponse(status="removing unused layers")
    yield ProgressResponse(status="success")


def push_model(store: ModelStore, name: str, *, insecure: bool = False,
               auth: tuple[str, str] | None = None) -> Iterator[ProgressResponse]:
    """Push the installed model ``name`` to the registry its name points at."""
    ref = RegistryRef.parse(name, insecure=insecure)
    yield ProgressResponse(status="retrieving manifest")
    record = store.find(ref.name.short)
    if record is None:
        yield ProgressResponse(status="couldn't retrieve manifest")
        raise ModelNotFound(ref.name.short)
    data = record.manifest_path.read_bytes()
    cancel = threading.Event()
    with RegistryClient(ref, auth=auth) as client:
        for layer in _unique(record.manifest):
            upload = BlobUpload(client, store.blobs.require(layer.digest), layer.digest, layer.size,
                                mount_source(store, ref, layer))
            yield from run_with_progress(upload.run, upload.progress, cancel, f"push {layer.digest[7:19]}")
        yield ProgressResponse(status="pushing manifest")
        client.send("PUT", ref.url("manifests", ref.name.tag), headers={"Content-Type": MANIFEST_MEDIA_TYPE},
                    content=data, what="push manifest").close()
    yield ProgressResponse(status="success")


def mount_source(store: ModelStore, ref: RegistryRef, layer: Layer) -> str | None:
    """Another repository on the same registry that holds this blob, to mount it from: a model we
    have under that registry's host (pulled from or pushed to it), else the layer's ``from`` model
    (what Ollama asks for)."""
    for record in store.records():
        other = record.name
        if other.host == ref.name.host and (other.namespace, other.model) != (ref.name.namespace, ref.name.model):
            if layer.digest in record.manifest.digests:
                return f"{other.namespace}/{other.model}"
    if layer.from_:
        try:
            source = RegistryRef.parse(layer.from_).name
        except OllamaMagicError:  # a from that is not a name: no mount
            return None
        if source.host == ref.name.host and (source.namespace, source.model) != (ref.name.namespace, ref.name.model):
            return f"{source.namespace}/{source.model}"
    return None
