"""A loaded projector (llama.cpp's libmtmd) beside a text model: prompts with images become chunks.

libmtmd splits a prompt at its media markers into text chunks (tokens) and image chunks (pixels,
preprocessed into the tiles the vision tower wants). The decoder evaluates the image chunks itself,
in the slot of the sequence they belong to: the tower encodes a chunk and its embeddings are decoded
into that sequence's KV cells at the next positions (``mtmd_helper_eval_chunk_single``, which takes
our context and seq_id).

For prefix reuse across requests, each image position is stood for in the slot's token list by a
negative number derived from the image's sha256 (real token ids are never negative), so a later
turn that resends the same image shares the prefix with the cached one, images included, and a
different image breaks it where it starts.

Everything here runs on the model's owner thread (``runner.py``), as the text context does.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import llama_cpp
from llama_cpp import mtmd_cpp as mtmd

from ..errors import InvalidRequest
from .images import MEDIA_MARKER, Picture
from .jobs import EngineError
from .llama_context import LlamaContext
from .llama_log import route_llama_log

log = logging.getLogger("ollama_magic")

mtmd.mtmd_log_set(route_llama_log, ctypes.c_void_p(0))  # libmtmd's chatter goes to logging too
mtmd.mtmd_helper_log_set(route_llama_log, ctypes.c_void_p(0))


@dataclass
class TextPart:
    tokens: list[int]
    is_image = False

    @property
    def length(self) -> int:
        return len(self.tokens)


@dataclass
class ImagePart:
    chunk: int  # an mtmd_input_chunk pointer, owned by its MediaPrompt's chunk list
    n_tokens: int
    digest: str
    is_image = True

    @property
    def length(self) -> int:
        return self.n_tokens


@dataclass
class MediaPrompt:
    """A tokenized prompt with images: its parts in order and the flat list the decoder caches
    (text tokens, and a stand-in per image position)."""

    parts: list[TextPart | ImagePart]
    tokens: list[int]
    image_tokens: int
    _chunks: int | None = field(default=None, repr=False)

    def part_starts(self) -> list[int]:
        """Where each part starts in ``tokens``."""
        starts, offset = [], 0
        for part in self.parts:
            starts.append(offset)
            offset += part.length
        return starts

    @property
    def ends_with_image(self) -> bool:
        return bool(self.parts) and self.parts[-1].is_image

    def prepend(self, tokens: list[int]) -> None:
        """Put text tokens in front (a generate request's ``context``)."""
        if tokens:
            self.parts.insert(0, TextPart(list(tokens)))
            self.tokens[:0] = tokens

    def reusable(self, n: int) -> int:
        """The longest cached prefix no longer than ``n`` that does not cut an image in two (an
        image is evaluated whole, never from its middle)."""
        for part, start in zip(self.parts, self.part_starts()):
            if part.is_image and start < n < start + part.length:
                return start
        return n

    def close(self) -> None:
        """Free libmtmd's chunks (their pixels); the stand-ins stay valid for the cache."""
        if self._chunks:
            mtmd.mtmd_input_chunks_free(self._chunks)
            self._chunks = None
            for part in self.parts:
                if part.is_image:
                    part.chunk = 0

    def __del__(self) -> None:  # a prompt that never reached a slot (refused, cancelled while queued)
        try:
            self.close()
        except Exception:  # noqa: BLE001 - at interpreter exit the bindings may be gone
            pass


def stand_ins(digest: str, chunk_index: int, n_tokens: int) -> list[int]:
    """Negative ids for an image chunk's positions, the same for the same image (and chunk of it)."""
    base = int(hashlib.sha256(f"{digest}:{chunk_index}".encode()).hexdigest()[:14], 16)
    return [-(1 + base * 65536 + k) for k in range(n_tokens)]


class Projector:
    """An mtmd context over a loaded text model: tokenize prompts with images, evaluate image chunks."""

    def __init__(self, path: Path, lctx: LlamaContext, *, threads: int, use_gpu: bool) -> None:
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = use_gpu
        params.n_threads = threads
        params.print_timings = False
        params.warmup = False  # the first image pays for the graph; a load does not
        self._marker = MEDIA_MARKER.encode()
        params.media_marker = self._marker
        self.ctx = mtmd.mtmd_init_from_file(str(path).encode(), lctx.model, params)
        if not self.ctx:
            raise EngineError(f"failed to load the vision projector {path.name} (see the log for llama.cpp's reason)")
        if not mtmd.mtmd_support_vision(self.ctx):
            self.close()
            raise EngineError(f"the projector {path.name} has no vision encoder (audio projectors are not supported)")
        if mtmd.mtmd_decode_use_mrope(self.ctx):
            self.close()
            raise EngineError("vision models with M-RoPE positions (the Qwen2-VL family) are not supported yet")
        self.lctx = lctx

    def tokenize(self, text: str, images: Sequence[Picture], *, add_special: bool) -> MediaPrompt:
        """Split ``text`` at its markers, one per image, into text and image parts."""
        count = text.count(MEDIA_MARKER)
        if count != len(images):
            raise InvalidRequest(f"the prompt holds {count} image markers ({MEDIA_MARKER}) for {len(images)} images: "
                                 "the message text may not contain the marker itself")
        bitmaps = []
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            for picture in images:
                pixels = (ctypes.c_uint8 * len(picture.rgb)).from_buffer_copy(picture.rgb)
                bitmap = mtmd.mtmd_bitmap_init(picture.width, picture.height, pixels)
                if not bitmap:
                    raise InvalidRequest(f"image of {picture.width}x{picture.height} pixels could not be read")
                mtmd.mtmd_bitmap_set_id(bitmap, picture.digest.encode())
                bitmaps.append(bitmap)
            encoded = text.encode("utf-8")
            source = mtmd.mtmd_input_text()
            source.text, source.text_len = encoded, len(encoded)
            source.add_special, source.parse_special = add_special, True
            array = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(bitmaps)))(*bitmaps)
            code = mtmd.mtmd_tokenize(self.ctx, chunks, ctypes.byref(source), array, len(bitmaps))
            if code != 0:
                raise InvalidRequest(f"the image could not be prepared for the model (libmtmd code {code})")
            prompt = self._parts(chunks)
        except BaseException:
            mtmd.mtmd_input_chunks_free(chunks)
            raise
        finally:
            for bitmap in bitmaps:
                mtmd.mtmd_bitmap_free(bitmap)
        return prompt

    def _parts(self, chunks: int) -> MediaPrompt:
        parts: list[TextPart | ImagePart] = []
        tokens: list[int] = []
        seen: dict[str, int] = {}
        image_tokens = 0
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                n = ctypes.c_size_t()
                pointer = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(n))
                # libmtmd writes LLAMA_TOKEN_NULL (-1) for delimiter tokens the text model's vocabulary
                # lacks (tiny-vision: SmolLM2 has no <fake_token_around_image>); nothing can decode them
                text = [t for t in pointer[: n.value] if t >= 0]
                if not text:
                    continue
                if parts and isinstance(parts[-1], TextPart):
                    parts[-1].tokens.extend(text)
                else:
                    parts.append(TextPart(text))
                tokens.extend(text)
                continue
            n_tokens = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            digest = (mtmd.mtmd_input_chunk_get_id(chunk) or b"").decode()
            index = seen[digest] = seen.get(digest, -1) + 1
            parts.append(ImagePart(chunk, n_tokens, digest))
            tokens.extend(stand_ins(digest, index, n_tokens))
            image_tokens += n_tokens
        return MediaPrompt(parts, tokens, image_tokens, chunks)

    def evaluate(self, part: ImagePart, n_past: int, seq_id: int) -> int:
        """Encode an image chunk and decode its embeddings into ``seq_id`` from ``n_past``; the next position."""
        if not part.chunk:
            raise EngineError("image chunk already freed")
        new_n_past = llama_cpp.llama_pos(0)
        code = mtmd.mtmd_helper_eval_chunk_single(self.ctx, self.lctx.ctx, part.chunk, n_past, seq_id,
                                                  self.lctx.n_batch, False, ctypes.byref(new_n_past))
        if code != 0:
            raise EngineError(f"evaluating an image failed (libmtmd code {code})")
        return new_n_past.value

    def close(self) -> None:
        if self.ctx:
            mtmd.mtmd_free(self.ctx)
            self.ctx = None


__all__ = ["ImagePart", "MediaPrompt", "Projector", "TextPart", "stand_ins"]
