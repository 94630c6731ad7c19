"""The model store: Ollama's directory layout under our own root, and the operations on it.

``create``/``list``/``show``/``copy``/``delete`` behave like Ollama's handlers of the same name and
write the same bytes, so the store can be pointed (``OLLAMA_MODELS``) at a real Ollama install and
each program reads what the other wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

from .. import envconfig
from ..errors import InvalidModelName, InvalidRequest, ModelNotFound, OllamaMagicError
from ..files import (TMP_PREFIX, atomic_write_bytes, data_dir, exclusive_lock, fsync_dir, remove_stale_temp_files,
                     temp_path_in)
from ..names import ModelName, host_from_dirname
from ..options import format_parameters
from ..types import (CreateRequest, ListedModel, ListedModelDetails, ListResponse, Message, ModelDetails, ProgressResponse,
                     ShowResponse)
from . import manifests as mt
from .blobs import BlobStore, Progress, blob_text, digest_bytes, parse_digest
from .convert import convert_safetensors_dir
from .gguf_meta import GGUFInfo, gguf_header, human_number, is_gguf, read_gguf
from .manifests import Layer, Manifest
from .modelfile import DEFAULT_TEMPLATE, Modelfile
from .quantize import quantize_blob
from .requests import CreateSpec, is_file_ref, to_spec

log = logging.getLogger("ollama_magic")

LOCK_FILE = ".ollama-magic.lock"

#: What to do when a name is not installed: install it if it can (True), or not (False). The store
#: itself installs nothing on its own; the engine and the CLI pass ``defaults.register_if_default``.
OnMissing = Callable[["ModelStore", str], bool]
#: The capabilities a listing shows, decided by the engine (``engine.capabilities``), not the store.
Capabilities = Callable[["ModelRecord"], "list[str]"]
PRUNE_GRACE_SECONDS = 3600.0  # Ollama's layerPruneGracePeriod


def no_prune() -> bool:
    """``OLLAMA_NOPRUNE`` set (to anything but an empty value, 0 or false): never remove blobs on our own."""
    return envconfig.no_prune()


def default_root() -> Path:
    """``$OLLAMA_MODELS``, else our own per-user directory (never Ollama's ``~/.ollama``)."""
    env = envconfig.models()
    if env:
        return Path(env).expanduser()
    return data_dir() / "models"


@dataclass
class ModelRecord:
    """One installed model: its name, manifest and where its blobs are."""

    name: ModelName
    manifest: Manifest
    manifest_path: Path
    manifest_digest: str  # hex sha256 of the manifest bytes: Ollama's model "digest" / ID
    modified_at: datetime
    store: "ModelStore" = field(repr=False)

    @property
    def model_path(self) -> Path:
        layer = self.manifest.layer(mt.MODEL)
        if layer is None:
            raise InvalidRequest(f"model {self.name.short!r} has no weights layer")
        return self.store.blobs.require(layer.digest)

    @property
    def projector_paths(self) -> list[Path]:
        return [self.store.blobs.require(x.digest) for x in self.manifest.layers_of(mt.PROJECTOR)]

    @property
    def adapter_paths(self) -> list[Path]:
        return [self.store.blobs.require(x.digest) for x in self.manifest.layers_of(mt.ADAPTER)]

    def _text(self, *media_types: str) -> str | None:
        for media_type in media_types:
            layer = self.manifest.layer(media_type)
            if layer is not None:
                return blob_text(self.store.blobs.require(layer.digest))
        return None

    @property
    def template(self) -> str | None:
        return self._text(mt.TEMPLATE, mt.LEGACY_PROMPT)

    @property
    def system(self) -> str | None:
        return self._text(mt.SYSTEM)

    @property
    def licenses(self) -> list[str]:
        return [blob_text(self.store.blobs.require(x.digest)) for x in self.manifest.layers_of(mt.LICENSE)]

    @property
    def parameters(self) -> dict[str, Any]:
        text = self._text(mt.PARAMS)
        return json.loads(text) if text else {}

    @property
    def messages(self) -> list[dict[str, Any]]:
        text = self._text(mt.MESSAGES)
        return json.loads(text) if text else []

    @property
    def config(self) -> dict[str, Any]:
        try:
            return json.loads(self.store.blobs.require(self.manifest.config.digest).read_bytes())
        except (OSError, ValueError) as exc:
            log.warning("model %s: unreadable config blob (%s)", self.name.short, exc)
            return {}

    @property
    def details(self) -> ModelDetails:
        config = self.config
        model_layer = self.manifest.layer(mt.MODEL)
        return ModelDetails(
            parent_model=model_layer.from_ if model_layer else "",
            format=config.get("model_format") or "",
            family=config.get("model_family") or "",
            families=config.get("model_families"),
            parameter_size=config.get("model_type") or "",
            quantization_level=config.get("file_type") or "",
        )

    def gguf_info(self, *, full_arrays: bool = False) -> GGUFInfo:
        """The model's GGUF header; shared and cached by blob digest (do not mutate it), except the
        ``full_arrays`` form (``show --verbose``), which is too big to keep."""
        if full_arrays:
            return read_gguf(self.model_path, full_arrays=True)
        return gguf_header(self.model_path)


@dataclass
class _Source:
    """What a FROM names: an installed model (inherits its layers) or a GGUF blob, with the further
    GGUF blobs converting a vision directory wrote (its projector), which count as more FROM lines."""

    record: ModelRecord | None = None
    digest: str | None = None
    more: list[str] = field(default_factory=list)


class ModelStore:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.blobs = BlobStore(self.root / "blobs")
        self.manifests_dir = self.root / "manifests"
        self._thread_lock = threading.RLock()

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # ---- locking -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise writers across threads and processes (kernel, CLI, server on one store)."""
        with exclusive_lock(self.root, LOCK_FILE, self._thread_lock):
            remove_stale_temp_files(self.blobs.directory)
            yield

    # ---- reading -------------------------------------------------------------------------------

    def manifest_path(self, name: ModelName) -> Path:
        return self.manifests_dir.joinpath(*name.manifest_relpath.parts)

    def _load(self, name: ModelName, path: Path) -> ModelRecord:
        data = path.read_bytes()
        return ModelRecord(
            name=name,
            manifest=Manifest.from_bytes(data),
            manifest_path=path,
            manifest_digest=hashlib.sha256(data).hexdigest(),
            modified_at=datetime.fromtimestamp(path.stat().st_mtime).astimezone(),
            store=self,
        )

    def records(self) -> list[ModelRecord]:
        """Every readable manifest under the root; odd files are skipped, not fatal."""
        found = []
        if not self.manifests_dir.is_dir():
            return found
        for path in sorted(self.manifests_dir.glob("*/*/*/*")):
            if not path.is_file():
                continue
            host, namespace, model, tag = path.relative_to(self.manifests_dir).parts
            try:
                name = ModelName.parse(f"{host_from_dirname(host)}/{namespace}/{model}:{tag}")
                found.append(self._load(name, path))
            except InvalidModelName:
                continue  # temp files and strays: not a model
            except (OSError, ValueError, KeyError) as exc:
                log.warning("skipping unreadable manifest %s (%s)", path, exc)
        return found

    def find(self, name: str) -> ModelRecord | None:
        """Look a model up (case-insensitively, as Ollama does); None if it is not installed."""
        parsed = ModelName.parse(name)
        path = self.manifest_path(parsed)
        if path.is_file():
            return self._load(parsed, path)
        wanted = parsed.short.lower()
        return next((r for r in self.records() if r.name.short.lower() == wanted), None)

    def resolve(self, name: str, *, on_missing: OnMissing | None = None) -> ModelRecord:
        """The installed model ``name``, else ModelNotFound. ``on_missing(store, name)`` may install
        it first (the engine's first-use registration of the embedded defaults)."""
        record = self.find(name)
        if record is None and on_missing is not None and on_missing(self, name):
            record = self.find(name)
        if record is None:
            raise ModelNotFound(name)
        return record

    def _ensure(self, name: str, on_missing: OnMissing | None) -> None:
        """Give ``on_missing`` its chance before the store's lock is taken (installing a model
        creates it, which takes that lock itself)."""
        if on_missing is None:
            return
        try:
            if self.find(name) is None:
                on_missing(self, name)
        except InvalidModelName:
            pass  # the locked step says what is wrong with the name

    def exists(self, name: str) -> bool:
        return self.find(name) is not None

    def list(self, capabilities: Capabilities | None = None) -> ListResponse:
        """``/api/tags``; each model's ``capabilities`` only when the caller (the engine) says how."""
        models = [_listed(r, capabilities) for r in self.records()]
        models.sort(key=lambda m: m.modified_at, reverse=True)
        return ListResponse(models=models)

    def show(self, name: str, *, verbose: bool = False) -> ShowResponse:
        """``/api/show`` but for ``capabilities``, which are the engine's to decide
        (``engine.capabilities``): ``Engine.show`` and the CLI fill them in."""
        return self.show_record(self.resolve(name), verbose=verbose)

    def show_record(self, record: ModelRecord, *, verbose: bool = False) -> ShowResponse:
        info = record.gguf_info(full_arrays=verbose)
        template_layer = record.template
        template = template_layer or info.metadata.get("tokenizer.chat_template") or DEFAULT_TEMPLATE
        params = record.parameters
        messages = record.messages
        modelfile = Modelfile(
            froms=[str(record.model_path), *map(str, record.projector_paths)],
            adapters=[str(p) for p in record.adapter_paths],
            template=template_layer,
            system=record.system,
            parameters=params,
            licenses=record.licenses,
            messages=[{"role": m.get("role", ""), "content": m.get("content", "")} for m in messages],
        )
        header = (
            '# Modelfile generated by "ollama show"\n'
            "# To build a new Modelfile based on this, replace FROM with:\n"
            f"# FROM {record.name.short}\n"
        )
        return ShowResponse(
            modelfile=modelfile.render(header=header),
            parameters=format_parameters(params),
            template=template,
            system=record.system or "",
            license="\n".join(record.licenses),
            details=record.details,
            model_info=_model_info(info),
            projector_info=_projector_info(record, verbose),
            messages=[Message(role=m.get("role", ""), content=m.get("content", "")) for m in messages] or None,
            modified_at=record.modified_at,
        )

    # ---- writing -------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        request: CreateRequest | Modelfile | str,
        *,
        trusted: bool = True,
        base_dir: str | Path | None = None,
        on_bytes: Progress | None = None,
        on_missing: OnMissing | None = None,
    ) -> Iterator[ProgressResponse]:
        """Create (or replace) ``name``; yields Ollama's status messages, ending with ``success``.

        ``request`` is a structured CreateRequest, a parsed Modelfile or Modelfile text. ``trusted``
        callers (Python API, CLI) may name local files in FROM/ADAPTER; untrusted ones (HTTP) may only
        name installed models, blobs already in the store, or digests. ``on_missing`` may install a
        FROM model that is not installed yet (see ``resolve``).
        """
        target = ModelName.parse(name)
        spec = to_spec(request, trusted=trusted, base_dir=Path(base_dir) if base_dir else None)
        if spec.template is not None:
            from ..engine.gotemplate import Template

            Template(spec.template)  # a TEMPLATE that does not parse is refused here, as Ollama does
        if spec.from_ and not is_file_ref(spec.from_, trusted, Path(base_dir) if base_dir else None):
            self._ensure(spec.from_, on_missing)
        with self._locked():
            yield from self._create_locked(target, spec, trusted, Path(base_dir) if base_dir else None, on_bytes)

    def _create_locked(
        self, target: ModelName, spec: CreateSpec, trusted: bool, base_dir: Path | None, on_bytes: Progress | None
    ) -> Iterator[ProgressResponse]:
        layers: list[Layer] = []
        params: dict[str, Any] = {}
        from_files = self._layers_from_files(spec.files or {}, trusted, base_dir, on_bytes)
        models = from_files.get(mt.MODEL, [])
        if spec.from_:
            if models:
                raise InvalidRequest("'files' holds a model GGUF beside 'from': name the model once")
            source = self._resolve_source(spec.from_, trusted, base_dir, on_bytes,
                                          with_projector=not from_files.get(mt.PROJECTOR))
            for kind, digests in self._sorted_by_kind(source.more).items():
                from_files.setdefault(kind, digests)  # a converted directory's projector: a second FROM line
        elif len(models) == 1:
            source = _Source(digest=models[0])
        elif spec.files:
            raise InvalidRequest("'files' must hold exactly one GGUF model file")
        else:
            raise InvalidRequest("neither 'from' or 'files' was specified")

        replaced: set[str] = set()  # model blobs a quantized one replaces
        if source.record is not None:
            base = source.record
            for layer in base.manifest.layers:
                inherited = Layer(layer.media_type, layer.digest, layer.size, base.name.short)
                if layer.media_type == mt.PARAMS:
                    params = dict(base.parameters)
                    continue  # re-written below, merged with the new parameters
                if layer.media_type == mt.MODEL and spec.quantize:
                    inherited = yield from self._quantized(inherited, spec.quantize, replaced)
                    layers.append(inherited)
                    continue
                layers.append(inherited)
                yield ProgressResponse(status=f"using existing layer {layer.digest}")
        else:
            assert source.digest is not None
            yield ProgressResponse(status="parsing GGUF")
            layer = self._blob_layer(mt.MODEL, source.digest)
            if spec.quantize:
                layer = yield from self._quantized(layer, spec.quantize, replaced)
            else:
                yield ProgressResponse(status=f"using existing layer {source.digest}")
            layers.append(layer)

        adapters = from_files.get(mt.ADAPTER, []) + [
            digest for value in spec.adapters
            for digest in self._resolve_file_ref(value, trusted, base_dir, on_bytes, line="ADAPTER")
        ]
        for media_type, digests in ((mt.PROJECTOR, from_files.get(mt.PROJECTOR, [])), (mt.ADAPTER, adapters)):
            if digests:
                layers = [x for x in layers if x.media_type != media_type]
                for digest in digests:
                    layers.append(self._blob_layer(media_type, digest))
                    yield ProgressResponse(status=f"using existing layer {digest}")

        model_layer = next((x for x in layers if x.media_type == mt.MODEL), None)
        if model_layer is None:
            raise InvalidRequest("the model has no weights: FROM must name a GGUF file, a blob or a model")
        info = gguf_header(self.blobs.require(model_layer.digest))

        text_layers = (
            ((mt.TEMPLATE, mt.LEGACY_PROMPT), [spec.template] if spec.template is not None else None),
            ((mt.SYSTEM,), [spec.system] if spec.system is not None else None),
            ((mt.LICENSE,), spec.licenses),
        )
        for media_types, texts in text_layers:
            if texts is None:
                continue
            layers = [x for x in layers if x.media_type not in media_types]
            for text in texts:
                layer, status = self._data_layer(media_types[0], text.encode("utf-8"))
                layers.append(layer)
                yield status
        if spec.messages:
            layers = [x for x in layers if x.media_type != mt.MESSAGES]
            layer, status = self._data_layer(mt.MESSAGES, mt.go_json(spec.messages))
            layers.append(layer)
            yield status
        params.update(spec.parameters)
        if params:
            layer, status = self._data_layer(mt.PARAMS, mt.go_json_sorted(params))
            layers.append(layer)
            yield status

        config = {
            "model_format": "gguf",
            "model_family": info.architecture,
            "model_families": [info.architecture],
            "model_type": human_number(info.parameter_count),
            "file_type": info.file_type,
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [x.digest for x in layers]},
        }
        config_layer, _ = self._data_layer(mt.CONFIG_MEDIA_TYPE, mt.go_json(config))
        yield ProgressResponse(status="writing manifest")
        self._write_manifest(target, Manifest(config_layer, tuple(layers)))
        if replaced and not no_prune():
            self._prune_blobs(replaced)  # an unquantized source no model uses (an upload, an import) goes
        yield ProgressResponse(status="success")

    def _quantized(self, layer: Layer, quantize: str, replaced: set[str]) -> Generator[ProgressResponse, None, Layer]:
        """``layer``'s weights quantized to ``quantize`` as a new model layer (``quantize_blob``), its
        source noted in ``replaced``; the layer itself when it already has that type."""
        digest, existed = yield from quantize_blob(self.blobs, layer.digest, quantize)
        yield ProgressResponse(status=f"{'using existing' if existed else 'creating new'} layer {digest}")
        if digest == layer.digest:
            return layer
        replaced.add(layer.digest)
        return self._blob_layer(mt.MODEL, digest)

    def copy(self, source: str, destination: str, *, on_missing: OnMissing | None = None) -> None:
        """Copy a model under a new name; blobs are shared, as in Ollama. ``on_missing`` may install
        ``source`` first (see ``resolve``).

        Copying over an existing name deletes nothing (Ollama's CopyModel only writes the manifest): the
        replaced model's blobs stay until a delete or the next start-up prune finds them unreferenced."""
        dst = ModelName.parse(destination)
        self._ensure(source, on_missing)
        with self._locked():
            record = self.resolve(source)
            self._write_manifest(dst, record.manifest, prune=False)

    def delete(self, name: str) -> None:
        """Remove a model and every blob no other manifest still uses."""
        with self._locked():
            record = self.find(name)
            if record is None:
                raise ModelNotFound(name)
            record.manifest_path.unlink()
            fsync_dir(record.manifest_path.parent)
            self._prune_empty_dirs(record.manifest_path.parent)
            self._prune_blobs(record.manifest.digests)

    def install_manifest(self, name: ModelName, data: bytes) -> bool:
        """Write a manifest received from a registry byte for byte (so the model's ID is the
        registry's manifest digest) and remove the blobs only the replaced version used; True if
        there were any (Ollama then reports ``removing unused layers``)."""
        manifest = Manifest.from_bytes(data)
        with self._locked():
            for digest in manifest.digests:
                self.blobs.require(digest)
            old = self.find(name.short)
            atomic_write_bytes(old.manifest_path if old is not None else self.manifest_path(name), data)
            if old is None:
                return False
            unused = old.manifest.digests - manifest.digests
            self._prune_blobs(unused)
            return bool(unused)

    # ---- helpers -------------------------------------------------------------------------------

    def _write_manifest(self, name: ModelName, manifest: Manifest, *, prune: bool = True) -> None:
        """Write ``name``'s manifest. A name that differs from an installed one only in case replaces
        that one (Ollama's getExistingName), so two manifests never claim one model. With ``prune``
        (create, as Ollama does unless OLLAMA_NOPRUNE), the replaced manifest's blobs that no model
        uses any more are removed."""
        old = self.find(name.short)
        path = old.manifest_path if old is not None else self.manifest_path(name)
        atomic_write_bytes(path, manifest.to_bytes())
        if old is not None and prune and not no_prune():
            self._prune_blobs(old.manifest.digests - manifest.digests)

    def referenced_digests(self) -> set[str] | None:
        """Every digest some manifest names; None when a manifest cannot be read (its blobs are unknown,
        so nothing may be pruned)."""
        in_use: set[str] = set()
        if not self.manifests_dir.is_dir():
            return in_use
        for path in self.manifests_dir.glob("*/*/*/*"):
            if not path.is_file() or path.name.startswith(TMP_PREFIX):
                continue
            try:
                in_use |= Manifest.from_bytes(path.read_bytes()).digests
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("unreadable manifest %s (%s): no blobs are pruned", path, exc)
                return None
        return in_use

    def _prune_blobs(self, candidates: set[str]) -> None:
        if not candidates:
            return
        in_use = self.referenced_digests()
        if in_use is None:
            return
        for digest in candidates - in_use:
            self.blobs.remove(digest)

    def prune(self, *, grace: float = PRUNE_GRACE_SECONDS) -> list[str]:
        """Start-up clean-up, as Ollama's server does: remove temp files that dead writers left, and
        blobs no manifest references that are older than ``grace`` seconds (a blob uploaded for a
        create that has not come yet is young). Nothing is removed while a manifest is unreadable.
        Returns what was removed."""
        removed: list[str] = []
        with self._locked():  # _locked already removes the blobs dir's stale temp files
            if self.manifests_dir.is_dir():
                for directory in [self.manifests_dir, *(p for p in self.manifests_dir.rglob("*") if p.is_dir())]:
                    remove_stale_temp_files(directory)
            in_use = self.referenced_digests()
            if in_use is None:
                return removed
            cutoff = time.time() - grace
            for digest in sorted(self.blobs.all_digests() - in_use):
                path = self.blobs.path(digest)
                with contextlib.suppress(FileNotFoundError, PermissionError):  # Windows: a runner holds it; next time
                    if path.stat().st_mtime <= cutoff:
                        path.unlink()
                        removed.append(digest)
            if removed:
                fsync_dir(self.blobs.directory)
                log.info("pruned %d unreferenced blob(s) from %s", len(removed), self.blobs.directory)
        return removed

    def _prune_empty_dirs(self, directory: Path) -> None:
        while directory != self.manifests_dir and directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()
            directory = directory.parent

    def _blob_layer(self, media_type: str, digest: str) -> Layer:
        return Layer(media_type, digest, self.blobs.size(digest))

    def _data_layer(self, media_type: str, data: bytes) -> tuple[Layer, ProgressResponse]:
        existed = self.blobs.has(digest_bytes(data))
        digest = self.blobs.write_bytes(data)
        verb = "using existing" if existed else "creating new"
        return Layer(media_type, digest, len(data)), ProgressResponse(status=f"{verb} layer {digest}")

    def _layers_from_files(
        self, files: dict[str, str], trusted: bool, base_dir: Path | None, on_bytes: Progress | None
    ) -> dict[str, list[str]]:
        """``files`` (name -> digest, blob path or, trusted, a local file) sorted by what each GGUF
        holds: a model, a projector or an adapter, read from its header as Ollama's ``ggufLayers``."""
        digests: list[str] = []
        for filename, value in files.items():
            if filename.startswith("/") or ".." in Path(filename).parts:
                raise InvalidRequest("file path must be relative")
            for digest in self._resolve_file_ref(value, trusted, base_dir, on_bytes, line=f"files[{filename!r}]"):
                if not is_gguf(self.blobs.require(digest)):
                    raise InvalidRequest(f"{filename}: only GGUF files are supported in 'files'")
                digests.append(digest)
        return self._sorted_by_kind(digests)

    def _sorted_by_kind(self, digests: list[str]) -> dict[str, list[str]]:
        """GGUF blobs by the layer each becomes (``gguf_layer_type``): the one rule for further FROM
        lines, ``files`` entries and the projector a vision directory converts to."""
        by_kind: dict[str, list[str]] = {}
        for digest in digests:
            by_kind.setdefault(gguf_layer_type(gguf_header(self.blobs.require(digest))), []).append(digest)
        return by_kind

    def _resolve_source(self, value: str, trusted: bool, base_dir: Path | None, on_bytes: Progress | None,
                        *, with_projector: bool = True) -> _Source:
        if is_file_ref(value, trusted, base_dir):
            first, *more = self._resolve_file_ref(value, trusted, base_dir, on_bytes, with_projector=with_projector)
            return _Source(digest=first, more=more)
        try:
            return _Source(record=self.resolve(value))
        except InvalidModelName:
            raise InvalidRequest(f"FROM {value!r} is neither an installed model nor a file") from None
        except ModelNotFound:
            raise ModelNotFound(value) from None

    def _resolve_file_ref(self, value: str, trusted: bool, base_dir: Path | None, on_bytes: Progress | None,
                          *, with_projector: bool = True, line: str = "FROM") -> list[str]:
        """A digest, a blob path or (trusted only) a local GGUF file -> its blob digest; a local
        safetensors dir -> the digests of the GGUFs it converts to: the model, then (a vision model's,
        unless not ``with_projector``) its projector. ``line`` names what gave ``value`` in a refusal."""
        ref = value.strip().removeprefix("@")
        if ref.startswith(("sha256:", "sha256-")):
            digest = parse_digest(ref)
            self.blobs.require(digest)
            return [digest]
        path = Path(ref).expanduser()
        digest = self.blobs.digest_of_path(path)
        if digest is not None and self.blobs.has(digest):
            return [digest]  # the seed's form: FROM <models>/blobs/sha256-<hex>
        if not trusted:
            raise InvalidRequest(
                f"{line} {value!r}: over HTTP a file must be uploaded first (POST /api/blobs/sha256:<hex>) "
                "and named by its digest or blob path"
            )
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if not path.exists():
            raise InvalidRequest(f"{path}: no such file or directory")
        if path.is_dir():
            return self._import_converted(path, with_projector)
        if not is_gguf(path):
            raise InvalidRequest(f"{path} is not a GGUF file")
        return [self.blobs.import_file(path, progress=on_bytes)]

    def _import_converted(self, model_dir: Path, with_projector: bool) -> list[str]:
        """Convert, then adopt: every file is written before any becomes a blob, so a projector that
        fails to convert leaves no text model behind."""
        self.blobs.directory.mkdir(parents=True, exist_ok=True)  # a new store's first model may be this one
        staged = [temp_path_in(self.blobs.directory), temp_path_in(self.blobs.directory)]
        try:
            written = convert_safetensors_dir(model_dir, staged[0], staged[1] if with_projector else None)
            return [self.blobs.adopt(path) for path in written]
        finally:
            for path in staged:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


def gguf_layer_type(info: GGUFInfo) -> str:
    """The layer a GGUF file becomes, by Ollama's ``ggufLayers`` rule: an adapter or a projector by
    its ``general.type`` (llama.cpp writes ``mmproj``), a standalone vision model (vision blocks and
    no text blocks, or llama.cpp's ``clip`` architecture) as a projector, anything else as the model."""
    kind = str(info.metadata.get("general.type", ""))
    if kind == "adapter":
        return mt.ADAPTER
    vision_only = info.arch_value("vision.block_count") is not None and info.arch_value("block_count") is None
    if kind in ("projector", "mmproj") or info.architecture == "clip" or vision_only:
        return mt.PROJECTOR
    return mt.MODEL


def _model_info(info: GGUFInfo) -> dict[str, Any]:
    model_info = {k: v for k, v in info.metadata.items() if k not in ("general.name", "tokenizer.chat_template")}
    for key in info.array_lengths:
        model_info[key] = []  # Ollama's non-verbose form: long arrays left out
    model_info["general.parameter_count"] = info.parameter_count
    return dict(sorted(model_info.items()))


def _projector_info(record: ModelRecord, verbose: bool) -> dict[str, Any] | None:
    """The first projector's GGUF metadata (Ollama: ``ProjectorInfo``, its KV map), long arrays
    left out unless verbose; None for a model without one."""
    paths = record.projector_paths
    if not paths:
        return None
    info = read_gguf(paths[0], full_arrays=True) if verbose else gguf_header(paths[0])
    projector_info = dict(info.metadata)
    for key in info.array_lengths:
        projector_info[key] = []
    return dict(sorted(projector_info.items()))


def _listed(record: ModelRecord, capabilities: Capabilities | None) -> ListedModel:
    """A /api/tags entry; a model whose weights cannot be read is still listed, without the extras."""
    details = ListedModelDetails(**record.details.model_dump())
    caps = None
    try:
        info = record.gguf_info()
        caps = capabilities(record) if capabilities is not None else None
    except (OSError, ValueError, OllamaMagicError) as exc:
        log.warning("model %s: weights unreadable for the listing (%s)", record.name.short, exc)
    else:
        width = info.arch_value("embedding_length")
        details.context_length = info.context_length
        details.embedding_length = int(width) if isinstance(width, int) and width > 0 else None
    return ListedModel(name=record.name.short, model=record.name.short, modified_at=record.modified_at,
                       size=record.manifest.size, digest=record.manifest_digest, details=details,
                       capabilities=caps)
