"""Quantize a model blob on create (Ollama's ``quantize``): llama.cpp's own ``llama_model_quantize``,
the code behind the ``llama-quantize`` tool that Ollama runs for the same job.

It runs in a child process: it is a blocking C call that takes a while on a large model and calls
``GGML_ABORT`` on some odd files, which would end the kernel or the server that asked. The child logs
one line per tensor (``[  12/ 201] blk.0.attn_q.weight ...``); those lines become Ollama's progress
(``quantizing F16 model to Q4_K_M`` with completed/total). The result is written to a temp file in
``blobs/``, checked, and only then named by its digest, so a failed or interrupted quantize leaves
neither a temp file nor a half blob.

Which tensors keep a higher precision (norms and biases stay F32, ``output.weight`` Q6_K in a K-quant,
a type whose block does not divide a row falls back to one that does) is llama.cpp's rule
(``llama_tensor_get_type``), as in Ollama, which shells out to ``llama-quantize``.
"""

from __future__ import annotations

import collections
import contextlib
import re
import subprocess
import sys
from pathlib import Path
from typing import Generator

import gguf

from ..errors import EngineError, InvalidRequest
from ..files import temp_path_in
from ..types import ProgressResponse
from .blobs import BlobStore, hash_file
from .gguf_meta import file_type_name, gguf_header, read_gguf

_FT = gguf.LlamaFileType
#: What ``quantize`` accepts, upper-cased, as Ollama's ``ggml.ParseFileType`` (``Q4_K`` is ``Q4_K_M``).
QUANT_TYPES: dict[str, _FT] = {
    "F32": _FT.ALL_F32, "F16": _FT.MOSTLY_F16, "BF16": _FT.MOSTLY_BF16, "Q8_0": _FT.MOSTLY_Q8_0,
    "Q4_K_S": _FT.MOSTLY_Q4_K_S, "Q4_K_M": _FT.MOSTLY_Q4_K_M, "Q4_K": _FT.MOSTLY_Q4_K_M,
}
#: The list Ollama's refusal names (it accepts BF16 but does not list it)
_LISTED = "F32, F16, Q4_K_S, Q4_K_M, Q8_0"
#: Only unquantized weights are quantized: quantizing a quantized model again loses twice
SOURCE_TYPES = ("F16", "BF16", "F32")
SOURCE_REFUSAL = "quantization is only supported for F16, BF16 and F32 models"
#: Ollama's placeholder digest on quantize progress lines
PROGRESS_DIGEST = "0000000000000000000"

_PROGRESS_RE = re.compile(r"\[\s*(\d+)/\s*(\d+)\]")

# The child: llama.cpp's log to stderr line by line (the parent reads the tensor lines from it), then
# the quantize. It imports llama_cpp only, never ollama_magic; argv: input, output, ftype.
# Its stdin is a pipe the parent holds open and never writes: EOF there means the parent is gone (even
# by SIGKILL, which runs no cleanup), and a thread then ends the child, its half-written output with it,
# instead of letting it quantize for minutes into a temp file the next store lock deletes. It is the
# first thing the child does, so a parent that dies during the imports is seen too.
_CHILD = r"""
import os, sys, threading

def _exit_with_parent():
    while os.read(0, 512):  # the raw fd: a thread blocked in sys.stdin's reader would stop the exit
        pass
    try:
        os.unlink(sys.argv[2])
    except OSError:
        pass
    os._exit(1)

threading.Thread(target=_exit_with_parent, daemon=True).start()

import ctypes
import llama_cpp

@llama_cpp.llama_log_callback
def _log(level, text, user_data):
    sys.stderr.write(text.decode("utf-8", "replace"))
    sys.stderr.flush()

llama_cpp.llama_log_set(_log, ctypes.c_void_p(0))
llama_cpp.llama_backend_init()
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(sys.argv[3])
params.nthread = 0
sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(params)))
"""


def parse_quant_type(value: str) -> str:
    """The canonical name of a requested type (``q4_k_m`` -> ``Q4_K_M``), or Ollama's refusal."""
    name = value.strip().upper()
    if name not in QUANT_TYPES:
        raise InvalidRequest(f"unsupported quantization type {name} - supported types are {_LISTED}")
    return "Q4_K_M" if name == "Q4_K" else name


#: The types a model can be quantized to, as Ollama spells them (``q4_K_M``), aliases left out: the
#: create widget's choices and the CLI's and the notebook verb's help
QUANTIZED_TYPES: tuple[str, ...] = tuple(sorted(
    name[0].lower() + name[1:] for name in QUANT_TYPES if name not in SOURCE_TYPES and parse_quant_type(name) == name))
#: ``create --quantize``'s help text (``ollama_magic create`` and ``%ollama create``)
QUANTIZE_HELP = (f"quantize an {'/'.join(SOURCE_TYPES)} model to "
                 f"{', '.join(QUANTIZED_TYPES[:-1])} or {QUANTIZED_TYPES[-1]}")


def quantize_blob(blobs: BlobStore, digest: str, quant_type: str) -> Generator[ProgressResponse, None, tuple[str, bool]]:
    """Quantize the model blob ``digest`` to ``quant_type`` (a ``parse_quant_type`` name), yielding
    Ollama's progress; returns (the new blob's digest, whether that blob was already there). A model
    already of that type is returned as it is; a quantized one is refused, in Ollama's words."""
    source = blobs.require(digest)
    have = gguf_header(source).file_type
    if have not in SOURCE_TYPES:
        raise InvalidRequest(SOURCE_REFUSAL)
    if have == quant_type:
        return digest, True
    ftype = QUANT_TYPES[quant_type]
    size = source.stat().st_size
    status = f"quantizing {have} model to {quant_type}"
    yield ProgressResponse(status=status, digest=PROGRESS_DIGEST, total=size, completed=0)
    staged = temp_path_in(blobs.directory)
    try:
        with contextlib.closing(run_quantize(source, staged, ftype)) as progress:  # closed: the child is killed
            for done, total in progress:
                yield ProgressResponse(status=status, digest=PROGRESS_DIGEST, total=size,
                                       completed=size * done // total)
        yield ProgressResponse(status="verifying conversion")
        check_output(staged, ftype, gguf_header(source).tensor_count)
        new = hash_file(staged)
        existed = blobs.has(new)
        blobs.adopt(staged, new)
        return new, existed
    finally:
        staged.unlink(missing_ok=True)


def run_quantize(source: Path, target: Path, ftype: int) -> Generator[tuple[int, int], None, None]:
    """Run the child on ``source`` -> ``target``; yields (tensors started, tensors in all) as it logs
    them. The child is killed if the caller stops early (a closed stream, an interrupt), and ends by
    itself if the caller's process dies (its stdin pipe reaches EOF); a child that
    fails or aborts raises EngineError with llama.cpp's last words."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(source), str(target), str(int(ftype))],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,  # stdin: see _CHILD
        text=True, encoding="utf-8", errors="replace", bufsize=1,
    )
    tail: collections.deque[str] = collections.deque(maxlen=20)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            match = _PROGRESS_RE.match(line)
            if match and int(match.group(2)) > 0:
                yield int(match.group(1)), int(match.group(2))
            elif line.strip():
                tail.append(line.strip())
        code = proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdin, proc.stderr):
            if pipe is not None:
                pipe.close()
    if code != 0 or not target.is_file():
        raise EngineError(f"llama.cpp could not quantize the model: {_failure(tail, code)}")


def _failure(tail: collections.deque[str], code: int) -> str:
    """llama.cpp's own reason (``failed to quantize: ...``, an assert), else its last line."""
    for line in reversed(tail):
        if "failed to quantize" in line:
            return line.split("failed to quantize:", 1)[-1].strip()
    for line in reversed(tail):
        if "GGML_ASSERT" in line or "error" in line.lower():
            return line
    how = f"killed by signal {-code}" if code < 0 else f"exit status {code}"
    return f"{tail[-1]} ({how})" if tail else how


def check_output(path: Path, ftype: int, tensor_count: int) -> None:
    """What llama.cpp wrote is a GGUF of the asked type with every tensor of the source, its data
    all there, before it may become a blob."""
    info = read_gguf(path)
    got = info.metadata.get("general.file_type")
    if got != int(ftype):
        raise EngineError(f"quantized file has type {file_type_name(got)}, not {file_type_name(int(ftype))}")
    if info.tensor_count != tensor_count:
        raise EngineError(f"quantized file has {info.tensor_count} tensors, the source {tensor_count}")
    end = info.data_offset + max((t.offset + t.nbytes for t in info.tensors), default=0)
    if end > path.stat().st_size:
        raise EngineError("quantized file is shorter than its tensors")


__all__ = ["PROGRESS_DIGEST", "QUANTIZED_TYPES", "QUANTIZE_HELP", "QUANT_TYPES", "SOURCE_REFUSAL", "SOURCE_TYPES", "check_output", "parse_quant_type",
           "quantize_blob", "run_quantize"]
