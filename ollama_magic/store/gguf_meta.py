"""Read a GGUF file's header (metadata and tensor shapes) without loading the model.

``gguf.GGUFReader`` builds a numpy view per array element: on Gemma 3's 262k-token vocabulary that
takes ~25 s. We only need scalars, array lengths and tensor shapes, so this reader walks the header
with ``struct`` over an mmap and keeps long arrays only when asked (``show --verbose``). The value-type
and file-type tables come from the ``gguf`` package, so the numbering stays llama.cpp's own.
"""

from __future__ import annotations

import functools
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf

from ..errors import InvalidRequest

GGUF_MAGIC = b"GGUF"
_T = gguf.GGUFValueType
_SCALARS: dict[int, tuple[str, int]] = {
    _T.UINT8: ("<B", 1), _T.INT8: ("<b", 1), _T.UINT16: ("<H", 2), _T.INT16: ("<h", 2),
    _T.UINT32: ("<I", 4), _T.INT32: ("<i", 4), _T.FLOAT32: ("<f", 4), _T.BOOL: ("<?", 1),
    _T.UINT64: ("<Q", 8), _T.INT64: ("<q", 8), _T.FLOAT64: ("<d", 8),
}
#: the classification head's output layer, as llama.cpp names it (``cls_out``)
CLASSIFIER_TENSOR = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.CLS_OUT] + ".weight"
#: arrays longer than this are summarised (Ollama's /api/show does the same unless verbose)
SHORT_ARRAY = 5


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the table: what the memory planner sizes layers from (``engine/geometry.py``)."""

    name: str
    ggml_type: int
    shape: tuple[int, ...]
    #: bytes of its data: elements / block size x bytes per block of its type (gguf's own table)
    nbytes: int
    #: where its data starts, from the start of the file's data section
    offset: int = 0


def tensor_nbytes(ggml_type: int, elements: int) -> int:
    """Bytes of ``elements`` values of a ggml type (0 for a type this gguf package does not know)."""
    try:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        return 0
    return elements // block * size


@dataclass
class GGUFInfo:
    metadata: dict[str, Any]
    #: for arrays left out: key -> element count
    array_lengths: dict[str, int] = field(default_factory=dict)
    parameter_count: int = 0
    tensor_count: int = 0
    tensors: list[TensorInfo] = field(default_factory=list)
    #: key -> its GGUF value type (``gguf.GGUFValueType``): llama.cpp aborts on a key of the wrong type
    value_types: dict[str, int] = field(default_factory=dict)
    #: where the data section starts in the file (tensor offsets count from here): the end of the
    #: header rounded up to ``general.alignment``
    data_offset: int = 0

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    def arch_value(self, key: str) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}")

    @property
    def file_type(self) -> str:
        return file_type_name(self.metadata.get("general.file_type"))

    @property
    def is_embedding_model(self) -> bool:
        """Ollama's rule: a model with a pooling type is an embedding model; a reranker is one too."""
        return self.arch_value("pooling_type") is not None or self.is_reranker

    @property
    def is_reranker(self) -> bool:
        """llama.cpp's RANK pooling: the GGUF says so, or it is an encoder (non-causal attention) with a
        classification head and no pooling type, which is what llama.cpp's converter writes for a
        ``*ForSequenceClassification`` cross-encoder (llama-server ranks those when started with
        ``--reranking``; here the file alone decides)."""
        pooling = self.arch_value("pooling_type")
        if pooling is not None:
            return int(pooling) == gguf.PoolingType.RANK
        return self.arch_value("attention.causal") is False and any(t.name == CLASSIFIER_TENSOR for t in self.tensors)

    @property
    def context_length(self) -> int | None:
        value = self.arch_value("context_length")
        return int(value) if value is not None else None


def file_type_name(value: Any) -> str:
    """``15`` -> ``Q4_K_M``, the way Ollama names quantization levels."""
    if value is None:
        return ""
    try:
        name = gguf.LlamaFileType(int(value)).name
    except ValueError:
        return f"unknown({value})"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def human_number(count: int) -> str:
    """Ollama's ``format.HumanNumber``: 268098176 -> ``268.10M``, 8e9 -> ``8B``."""
    for scale, suffix, decimals in ((1_000_000_000, "B", 1), (1_000_000, "M", 2)):
        if count >= scale:
            number = count / scale
            return f"{number:.0f}{suffix}" if number == int(number) else f"{number:.{decimals}f}{suffix}"
    if count >= 1000:
        return f"{count / 1000:.0f}K"
    return str(count)


def read_gguf(path: Path, *, full_arrays: bool = False) -> GGUFInfo:
    """Parse the header of a GGUF file. Raises InvalidRequest if it is not one."""
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _Reader(mm, full_arrays).read()
    except (ValueError, struct.error, IndexError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"{path.name} is not a valid GGUF file ({exc})") from None


@functools.lru_cache(maxsize=32)
def gguf_header(blob: Path) -> GGUFInfo:
    """A blob's GGUF header, parsed once per process and shared (do not mutate it): a blob is named
    by its sha256, so the content behind a blob path never changes, and a parse walks the whole
    vocabulary in Python (262k entries for Gemma 3), which every request used to do twice."""
    return read_gguf(blob)


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == GGUF_MAGIC


class _Reader:
    def __init__(self, buf: mmap.mmap, full_arrays: bool) -> None:
        self.buf = buf
        self.pos = 0
        self.full_arrays = full_arrays

    def unpack(self, fmt: str, size: int) -> Any:
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def string(self) -> str:
        length = self.unpack("<Q", 8)
        if length > len(self.buf) - self.pos:
            raise ValueError("string runs past the end of the file")
        value = self.buf[self.pos : self.pos + length].decode("utf-8")
        self.pos += length
        return value

    def skip_string(self) -> None:
        self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]

    def value(self, vtype: int) -> Any:
        if vtype == _T.STRING:
            return self.string()
        if vtype in _SCALARS:
            return self.unpack(*_SCALARS[vtype])
        raise ValueError(f"unknown GGUF value type {vtype}")

    def array(self, key: str, info: GGUFInfo) -> Any:
        etype = self.unpack("<I", 4)
        count = self.unpack("<Q", 8)
        keep = self.full_arrays or count <= SHORT_ARRAY
        if not keep:
            info.array_lengths[key] = count
        if etype in _SCALARS:
            fmt, size = _SCALARS[etype]
            if keep:
                values = list(struct.unpack_from(f"<{count}{fmt[1]}", self.buf, self.pos))
            self.pos += size * count
            return values if keep else None
        if etype == _T.STRING:
            if keep:
                return [self.string() for _ in range(count)]
            for _ in range(count):
                self.skip_string()
            return None
        if etype == _T.ARRAY:
            return [self.array(key, info) for _ in range(count)]
        raise ValueError(f"unknown GGUF array element type {etype}")

    def read(self) -> GGUFInfo:
        if self.buf[:4] != GGUF_MAGIC:
            raise ValueError("bad magic")
        self.pos = 4
        version = self.unpack("<I", 4)
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old")
        tensor_count = self.unpack("<Q", 8)
        kv_count = self.unpack("<Q", 8)
        info = GGUFInfo(metadata={}, tensor_count=tensor_count)
        for _ in range(kv_count):
            key = self.string()
            vtype = self.unpack("<I", 4)
            info.value_types[key] = vtype
            value = self.array(key, info) if vtype == _T.ARRAY else self.value(vtype)
            if value is not None:
                info.metadata[key] = value
        for _ in range(tensor_count):
            name = self.string()
            n_dims = self.unpack("<I", 4)
            dims = struct.unpack_from(f"<{n_dims}Q", self.buf, self.pos)
            self.pos += 8 * n_dims
            ggml_type = self.unpack("<I", 4)
            offset = self.unpack("<Q", 8)
            elements = 1
            for d in dims:
                elements *= d
            info.parameter_count += elements
            info.tensors.append(TensorInfo(name, ggml_type, tuple(dims), tensor_nbytes(ggml_type, elements), offset))
        alignment = int(info.metadata.get("general.alignment", gguf.GGUF_DEFAULT_ALIGNMENT)) or 1
        info.data_offset = -(-self.pos // alignment) * alignment
        return info
