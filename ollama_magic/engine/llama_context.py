"""Our own handle on a llama.cpp model, its multi-sequence context and one reusable batch.

The high-level ``llama_cpp.Llama`` serves one sequence per context (it raises ``n_seq_max`` only for
embedding contexts), so the batching decoder drives the C API itself through this small wrapper
instead of reaching into ``Llama``'s privates; embedding models use its sibling
:class:`EmbeddingContext`, so every model loads through :func:`load_model`. Everything here except
the vocabulary calls (:meth:`LlamaContext.tokenize`, :meth:`~LlamaContext.piece`,
:meth:`~LlamaContext.detokenize`: thread-safe in llama.cpp, each with its own buffers) must run on
the model's owner thread (see ``runner.py``).
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import llama_cpp
import numpy as np

from .. import envconfig
from ..errors import EngineError, InvalidRequest
from ..store.adapters import check_adapter_files
from . import llama_log  # noqa: F401 - llama.cpp's log goes to logging from before the first load
from .geometry import KV_TYPES
from .logprobs import token_logprob
from .lora import LoraAdapters

if TYPE_CHECKING:
    from .buffer_report import BufferReport
    from .jobs import LoadOptions


#: OLLAMA_FLASH_ATTENTION's three states as llama.cpp's ``flash_attn_type`` ("auto": llama-server's ``-fa auto``)
FLASH_ATTN_TYPES = {"auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED}
#: OLLAMA_KV_CACHE_TYPE's names (Ollama's three) as ggml type ids, for both K and V as Ollama sets them
KV_CACHE_TYPES = {name: int(ggml_type) for name, ggml_type in KV_TYPES.items()}


@functools.lru_cache(maxsize=1)
def extra_buffers_safe() -> bool:
    """Whether models may load into llama.cpp's extra CPU buffer types (weight repacking, AMX).

    A llama-cpp-python built natively (pip's default, ``GGML_NATIVE=ON``) on a CPU with AMX compiles
    llama.cpp's AMX kernels in, and with 0.3.36 the first ``llama_decode`` of a quantized model then
    crashes the process in ``ggml_backend_amx_mul_mat`` (measured here on a Xeon with amx_int8: raw
    ``llama_cpp.Llama`` segfaults the same way). Such a build loads without extra buffers: slower
    on those weights than repacked ones, never a dead kernel. ``OLLAMA_MAGIC_EXTRA_BUFFERS=1`` turns
    them back on for a build whose AMX path works; builds without AMX (``GGML_NATIVE=OFF``, as the
    Makefile builds) keep them."""
    if envconfig.extra_buffers():
        return True
    llama_cpp.llama_backend_init()
    return b"AMX_INT8 = 1" not in (llama_cpp.llama_print_system_info() or b"")


@dataclass(frozen=True)
class ContextShape:
    """The load-time numbers of one context (Ollama's rule: n_ctx = parallel x num_ctx)."""

    num_ctx: int  # tokens each sequence may hold
    parallel: int  # sequences decoded together
    num_batch: int  # tokens per llama_decode
    threads: int
    num_gpu: int
    use_mmap: bool
    #: layers per offload device (see ``LoadOptions.tensor_split``)
    tensor_split: tuple[int, ...] = ()
    #: the offload devices by name (see ``LoadOptions.devices``)
    devices: tuple[str, ...] = ()
    flash_attn: str = "auto"  # a key of FLASH_ATTN_TYPES
    kv_cache_type: str = "f16"  # a key of KV_CACHE_TYPES

    @property
    def n_ctx(self) -> int:
        return self.num_ctx * self.parallel

    @property
    def batch_capacity(self) -> int:
        """Tokens per llama_decode: ``num_batch``, but never fewer than the sequences decoded together
        (llama-server's ``max(n_batch, n_parallel)``: every generating sequence feeds one token per
        step, and llama.cpp asserts that its output buffer holds one row per sequence)."""
        return max(1, self.num_batch, self.parallel)


def check_shape(shape: ContextShape) -> None:
    """Refuse numbers llama.cpp would abort on (or misuse) with a ValueError, before it sees them."""
    if shape.num_ctx < 1:
        raise ValueError(f"num_ctx must be at least 1 (got {shape.num_ctx})")
    if not 1 <= shape.parallel <= llama_cpp.llama_max_parallel_sequences():
        raise ValueError(f"parallel sequences must be 1 to {llama_cpp.llama_max_parallel_sequences()} "
                         f"(got {shape.parallel})")
    if shape.threads < 1:
        raise ValueError(f"threads must be at least 1 (got {shape.threads})")
    if len(shape.tensor_split) > llama_cpp.llama_max_devices() or any(n < 0 for n in shape.tensor_split):
        raise ValueError(f"tensor_split must have at most {llama_cpp.llama_max_devices()} non-negative "
                         f"entries (got {list(shape.tensor_split)})")
    if shape.flash_attn not in FLASH_ATTN_TYPES:
        raise ValueError(f"flash attention must be one of {', '.join(FLASH_ATTN_TYPES)} (got {shape.flash_attn!r})")
    if shape.kv_cache_type not in KV_CACHE_TYPES:
        raise ValueError(f"the K/V cache type must be one of {', '.join(KV_CACHE_TYPES)} "
                         f"(got {shape.kv_cache_type!r})")


def settled_kv_type(flash_attn: str, kv_cache_type: str) -> tuple[str, str | None]:
    """The K/V cache type llama.cpp can take with this flash-attention setting, and the one-line note
    when it differs from what was asked (the runner loads with it, the planner sizes it).

    A quantized V cache needs flash attention (llama.cpp's ``llama_init_from_model`` refuses it with
    flash attention off, and turns ``auto`` on for it, as llama-server does): with flash attention
    forced off the cache falls back to f16, as Ollama does ("quantized kv cache requested but flash
    attention disabled"), instead of a failed load. What only llama.cpp knows (a model's head size
    that the quantized block does not divide, an architecture it keeps flash attention off for) is
    the retry in :class:`LlamaContext`."""
    if kv_cache_type != "f16" and flash_attn == "off":
        return "f16", (f"K/V cache {kv_cache_type} needs flash attention, which OLLAMA_FLASH_ATTENTION turns off: "
                       "using f16")
    return kv_cache_type, None


def settle_attention(shape: ContextShape) -> tuple[ContextShape, str | None]:
    """``shape`` with the K/V cache type llama.cpp can take (:func:`settled_kv_type`), and its note."""
    kv_type, note = settled_kv_type(shape.flash_attn, shape.kv_cache_type)
    return (replace(shape, kv_cache_type=kv_type) if note else shape), note


def model_params(shape: ContextShape) -> llama_cpp.llama_model_params:
    """How every model loads: offloaded layers, mmap or not, extra buffer types when they are safe.

    ``use_mmap`` is a load mode in this llama.cpp (``llama_model_params`` has no ``use_mmap`` field any
    more, and ctypes takes an unknown attribute silently): memory-mapped, or read in whole, as
    ``llama_cpp.Llama`` maps it."""
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = 0x7FFFFFFF if shape.num_gpu < 0 else shape.num_gpu
    mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP if shape.use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
    mparams.use_extra_bufts = extra_buffers_safe()
    # Always an explicit, NULL-terminated device list (empty: the CPU alone), never NULL: see LoadOptions.devices
    handles = _device_handles(shape.devices)
    listed = (ctypes.c_void_p * (len(handles) + 1))(*handles, None)
    mparams.devices = ctypes.addressof(listed)
    mparams._devices_keepalive = listed  # type: ignore[attr-defined]
    if any(shape.tensor_split):
        # llama.cpp reads llama_max_devices() floats; the struct keeps the array alive (ctypes' _objects)
        split = (ctypes.c_float * llama_cpp.llama_max_devices())(*map(float, shape.tensor_split))
        mparams.tensor_split = ctypes.cast(split, ctypes.POINTER(ctypes.c_float))
        mparams._tensor_split_keepalive = split  # type: ignore[attr-defined]
    return mparams


def _device_handles(names: tuple[str, ...]) -> list[int]:
    """The ggml device handles of ``names``; a device that is gone (or a worker that stopped
    answering) is one clear error, before llama.cpp would abort on it."""
    if not names:
        return []
    from .devices import devices

    known = {d.name: d for d in devices()}
    missing = [n for n in names if n not in known or not known[n].reachable]
    if missing:
        raise ValueError(f"device {', '.join(missing)} is not available (an RPC worker that stopped answering?)")
    return [known[n].handle for n in names]


def load_model(path: Path, shape: ContextShape) -> llama_cpp.llama_model_p:
    """Load a model's weights: the one place the engine does (generation and embedding contexts
    alike), so :func:`extra_buffers_safe` applies to every model."""
    llama_cpp.llama_backend_init()
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), model_params(shape))
    if not model:
        raise ValueError(f"failed to load model from file: {path}")
    return model


class LlamaContext:
    """One model, one context with ``parallel`` sequences in a unified KV cache, one batch.

    The KV cache is unified (one pool of n_ctx cells, masked per sequence), as llama-server's default
    4-slot mode: with split per-sequence caches llama.cpp only puts consecutive sequence ids into one
    micro-batch, so slots 0 and 2 decoding together would cost two passes over the weights.
    """

    def __init__(self, path: Path, shape: ContextShape, adapters: Sequence[Path] = ()) -> None:
        check_shape(shape)
        try:  # again at load (cheap: cached headers): a store edited by hand must not reach llama.cpp
            check_adapter_files(path, list(adapters))
        except InvalidRequest as exc:
            raise ValueError(str(exc)) from None
        #: one line per way this load differs from what was asked (a K/V cache type that fell back)
        self.notes: list[str] = []
        shape, note = settle_attention(shape)
        self._note(note)
        self.model = load_model(path, shape)
        try:
            #: the model's LoRA adapters (``lora.py``), freed before it
            self.adapters = LoraAdapters(self.model, adapters)
        except BaseException:
            llama_cpp.llama_model_free(self.model)
            raise
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self.vocab)
        self.ctx = llama_cpp.llama_init_from_model(self.model, self.context_params(shape))
        if not self.ctx and shape.kv_cache_type != "f16":
            # llama.cpp refused the quantized cache for this model (its log says why): f16 instead
            self._note(f"llama.cpp could not make a {shape.kv_cache_type} K/V cache for this model "
                       "(no flash attention for it): using f16")
            shape = replace(shape, kv_cache_type="f16")
            self.ctx = llama_cpp.llama_init_from_model(self.model, self.context_params(shape))
        if not self.ctx:
            self.adapters.free()
            llama_cpp.llama_model_free(self.model)
            raise ValueError(f"failed to create a context of {shape.n_ctx} tokens")
        #: the LoRA scale vector the context computes with now (one per adapter: all 1.0 at load)
        self.lora: tuple[float, ...] = ()
        self.set_lora((1.0,) * len(self.adapters))
        #: the shape the context was made with (its K/V cache type after any fallback)
        self.shape = shape
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_ctx = llama_cpp.llama_n_ctx(self.ctx)
        #: the sliding window of the model's SWA layers (0: none), for ``reusable``
        self.n_swa = llama_cpp.llama_model_n_swa(self.model)
        # What llama.cpp settled on (it caps n_batch at n_ctx): one decode never takes more entries, and
        # a non-causal (embedding) context needs the whole of it in one micro-batch.
        self.n_batch = min(llama_cpp.llama_n_batch(self.ctx), llama_cpp.llama_n_ubatch(self.ctx))
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)

    def context_params(self, shape: ContextShape) -> llama_cpp.llama_context_params:
        """The generation context: ``parallel`` sequences in one unified KV cache (see the class)."""
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = shape.n_ctx
        cparams.n_batch = shape.batch_capacity
        cparams.n_ubatch = shape.batch_capacity
        cparams.n_seq_max = shape.parallel
        cparams.n_threads = shape.threads
        cparams.n_threads_batch = shape.threads
        cparams.flash_attn_type = FLASH_ATTN_TYPES[shape.flash_attn]
        cparams.type_k = cparams.type_v = KV_CACHE_TYPES[shape.kv_cache_type]
        cparams.kv_unified = True
        return cparams

    def _note(self, note: str | None) -> None:
        if note:  # the scheduler logs it with the model's name, beside the planner's notes
            self.notes.append(note)

    # ---- vocabulary (tokenize is thread-safe in llama.cpp; the rest is cheap and read-only) ----

    def tokenize(self, text: bytes, *, add_bos: bool, special: bool = True) -> list[int]:
        size = len(text) + 8
        buffer = (llama_cpp.llama_token * size)()
        n = llama_cpp.llama_tokenize(self.vocab, text, len(text), buffer, size, add_bos, special)
        if n < 0:
            size = -n
            buffer = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self.vocab, text, len(text), buffer, size, add_bos, special)
        return list(buffer[:n])

    def piece(self, token: int, special: bool = False) -> bytes:
        """The token's bytes as the reply's text has them; ``special``: control tokens by their names.

        The buffer is this call's own: ``detokenize`` runs on callers' threads while the owner thread
        decodes, and ctypes releases the GIL inside ``llama_token_to_piece`` (a shared buffer gave one
        stream another call's bytes)."""
        buffer = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, len(buffer), 0, special)
        if n < 0:
            buffer = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buffer, -n, 0, special)
        return buffer.raw[:n]

    def detokenize(self, tokens: list[int]) -> bytes:
        return b"".join(self.piece(t) for t in tokens)

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    # ---- decoding -----------------------------------------------------------------------------

    def decode(self, entries: list[tuple[int, int, int, bool]]) -> int:
        """Decode (token, position, seq_id, wants_logits) entries in one llama_decode; returns its code.

        Output rows are numbered in entry order, counting only entries that want logits. More entries
        than the batch holds would write past its arrays (and trip llama.cpp's asserts, which abort the
        process), so they are refused here, before ctypes touches anything.
        """
        if len(entries) > self.n_batch:
            raise EngineError(f"{len(entries)} tokens in one decode, more than the batch holds ({self.n_batch})")
        if not self.ctx:
            raise EngineError("the model was unloaded")
        batch = self.batch
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(entries)
        return llama_cpp.llama_decode(self.ctx, batch)

    def logprob(self, row: int, token: int) -> float:
        """``token``'s log probability on batch row ``row`` of the last decode."""
        return token_logprob(self.ctx, row, self.n_vocab, [token])[0]

    def logprobs(self, row: int, tokens: list[int]) -> list[float]:
        """Each of ``tokens``' log probability on batch row ``row`` of the last decode."""
        return token_logprob(self.ctx, row, self.n_vocab, tokens)

    def forget(self, seq: int, start: int = 0) -> bool:
        """Drop a sequence's cells from ``start`` on (False: the model cannot cut a sequence there)."""
        return bool(llama_cpp.llama_memory_seq_rm(self.memory, seq, start, -1))

    def share(self, source: int, target: int, count: int) -> None:
        """Give sequence ``target`` the cells of ``source``'s first ``count`` positions (``target``
        holds none). In the unified cache this only marks the cells as the target's too: no data is
        copied and no cell is used twice, and a shared cell is never overwritten by a sliding window."""
        llama_cpp.llama_memory_seq_cp(self.memory, source, target, 0, count)

    def reusable(self, seq: int, count: int) -> bool:
        """Whether a sequence's cells before position ``count`` still give what evaluating them would.

        A sliding-window cache overwrites a sequence's cells that its newest position no longer sees
        (llama.cpp's ``find_slot``) and then drops every older cell of it, so the cells of a prefix
        that went on for a while may lack the start of the window position ``count`` needs. The check
        is llama-server's (its ``pos_min`` test before it reuses a slot's cache)."""
        if self.n_swa <= 0 or count <= 0:
            return True
        return llama_cpp.llama_memory_seq_pos_min(self.memory, seq) <= max(0, count - self.n_swa)

    def shift(self, seq: int, keep: int, discard: int, n_past: int) -> bool:
        """Context shift: drop positions [keep, keep+discard) of a sequence and move the cells after
        them down by ``discard`` (RoPE re-applied by llama.cpp at the next decode). False when this
        model's memory cannot shift (recurrent models, some position encodings)."""
        if not llama_cpp.llama_memory_can_shift(self.memory):
            return False
        if not llama_cpp.llama_memory_seq_rm(self.memory, seq, keep, keep + discard):
            return False
        llama_cpp.llama_memory_seq_add(self.memory, seq, keep + discard, n_past, -discard)
        return True

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.memory, True)

    def set_lora(self, scales: tuple[float, ...]) -> None:
        """Compute with these adapter scales from the next decode on (cells already computed keep the
        scales they were computed with: the decoder keys its prefix reuse on them)."""
        if scales != self.lora:
            self.adapters.apply(self.ctx, scales)
            self.lora = tuple(scales)

    def close(self) -> None:
        if self.ctx:
            llama_cpp.llama_batch_free(self.batch)
            llama_cpp.llama_free(self.ctx)  # the context refers to the adapters: it goes first
            self.adapters.free()  # then the adapters, before the model that would free them again
            llama_cpp.llama_model_free(self.model)
            self.ctx = None
            self.model = None


class EmbeddingContext(LlamaContext):
    """An embedding context on the same model loading: every token an output, pooled per sequence.

    Its parameters are the ones ``llama_cpp.Llama(embedding=True, flash_attn=True, ...)`` set before
    the engine dropped it (test_embedding_context.py compares them field by field): up to ``min(n_batch,
    llama_max_parallel_sequences())`` sequences in a unified KV cache, so one decode can pack many
    short texts; flash attention on (1.6x more texts/s on all-MiniLM, same vectors); and Llama's YaRN
    and perf-counter values, which differ from llama.cpp's defaults. ``pooling`` is a
    ``LLAMA_POOLING_TYPE_*``; UNSPECIFIED takes the GGUF's own.
    """

    def __init__(self, path: Path, shape: ContextShape,
                 pooling: int = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED, adapters: Sequence[Path] = ()) -> None:
        self._pooling_request = pooling
        super().__init__(path, shape, adapters)
        self.pooling = llama_cpp.llama_pooling_type(self.ctx)
        self.n_embd = llama_cpp.llama_model_n_embd(self.model)
        self.n_seq_max = llama_cpp.llama_n_seq_max(self.ctx)
        #: floats per pooled vector: the hidden size, or the classifier's outputs for RANK (rerankers)
        rank = self.pooling == llama_cpp.LLAMA_POOLING_TYPE_RANK
        self.n_pooled = llama_cpp.llama_model_n_cls_out(self.model) if rank else self.n_embd

    def context_params(self, shape: ContextShape) -> llama_cpp.llama_context_params:
        cparams = super().context_params(shape)
        cparams.n_seq_max = min(shape.batch_capacity, llama_cpp.llama_max_parallel_sequences())
        cparams.embeddings = True
        cparams.pooling_type = self._pooling_request
        # on unless forced off: "auto" keeps the measured 1.6x (a BERT encoder has no K/V cache to
        # quantize; a generative model's holds one batch of texts, so its type is the load's, f16 by default)
        cparams.flash_attn_type = FLASH_ATTN_TYPES["off" if shape.flash_attn == "off" else "on"]
        cparams.yarn_attn_factor = 1.0  # Llama's values (llama.cpp's defaults are -1, "from the model")
        cparams.yarn_beta_fast = 32.0
        cparams.yarn_beta_slow = 1.0
        cparams.no_perf = False
        return cparams

    def detokenize(self, tokens: list[int]) -> bytes:
        """As ``Llama.detokenize`` answered for embedding models: without the leading space of a text
        that starts with BOS (``[CLS]`` on BERT)."""
        text = super().detokenize(tokens)
        if tokens and tokens[0] == llama_cpp.llama_vocab_bos(self.vocab) and text[:1] == b" ":
            return text[1:]
        return text

    def pooled(self, seq: int) -> np.ndarray:
        """Sequence ``seq``'s pooled vector from the last decode (a copy: the next decode reuses the buffer)."""
        pointer = llama_cpp.llama_get_embeddings_seq(self.ctx, seq)
        if not pointer:
            raise ValueError(f"no pooled embedding for sequence {seq}")
        return np.ctypeslib.as_array(pointer, shape=(self.n_pooled,)).copy()

    def token_vector(self, index: int) -> np.ndarray:
        """The output vector of the batch's ``index``-th token from the last decode (a copy)."""
        pointer = llama_cpp.llama_get_embeddings_ith(self.ctx, index)
        if not pointer:
            raise ValueError(f"no embedding for batch token {index}")
        return np.ctypeslib.as_array(pointer, shape=(self.n_embd,)).copy()


def load_shape(opts: "LoadOptions", threads: int) -> ContextShape:
    """The context a runner creates for ``opts``: one rule for the runner and the planner's probe.
    Embedding models hold one sequence of ``num_ctx`` tokens per text, and a text must fit one decode."""
    if opts.embedding:
        return ContextShape(num_ctx=opts.num_ctx, parallel=1, num_batch=min(opts.num_batch, opts.num_ctx),
                            threads=threads, num_gpu=opts.num_gpu, use_mmap=opts.use_mmap,
                            tensor_split=opts.tensor_split, devices=opts.devices, flash_attn=opts.flash_attn,
                            kv_cache_type=opts.kv_cache_type)
    return ContextShape(num_ctx=opts.num_ctx, parallel=max(1, opts.num_parallel), num_batch=opts.num_batch,
                        threads=threads, num_gpu=opts.num_gpu, use_mmap=opts.use_mmap,
                        tensor_split=opts.tensor_split, devices=opts.devices, flash_attn=opts.flash_attn,
                        kv_cache_type=opts.kv_cache_type)


def probe_load(path: Path, opts: "LoadOptions") -> "BufferReport":
    """llama.cpp's buffer report for loading ``path`` with ``opts``, allocating nothing (the planner's
    measurement of compute and output buffers: see ``buffer_report.probe``)."""
    from .buffer_report import probe

    shape, _ = settle_attention(load_shape(opts, threads=1))  # what the runner's context will be
    check_shape(shape)
    if opts.embedding:
        probe_ctx = EmbeddingContext.__new__(EmbeddingContext)  # its parameters, without a load
        probe_ctx._pooling_request = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
        cparams = probe_ctx.context_params(shape)
    else:
        cparams = LlamaContext.context_params(LlamaContext.__new__(LlamaContext), shape)
    return probe(path, model_params(shape), cparams)
