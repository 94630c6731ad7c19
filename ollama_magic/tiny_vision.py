"""``tiny-vision``: a plumbing fixture for the vision path, SmolLM2-135M plus a projector of random weights.

No vision GGUF can be installed from PyPI, so this one is built: SmolVLM is SmolLM2 plus a SigLIP
vision tower joined by llama.cpp's ``idefics3`` projector (pixel shuffle, then one linear layer into the
text model's embedding width). Here the tower is tiny (2 layers, width 64, 64x64 tiles of 16x16
patches) and its weights are random, drawn from a fixed seed, so the file is the same bytes every time
(the same blob digest) and takes milliseconds to write. Its output width is 576, smollm2:135m's
embedding width, which is all llama.cpp checks when it joins the two.

What it is good for: every step of an image request runs for real (libmtmd decodes the image, the
vision tower encodes it, its embeddings enter the text model's KV cache beside the text tokens), so
counts, errors, caching and determinism can be tested. What it is not: a model that sees. Its answers
about images are meaningless, and ``show`` says so (its license and the projector's description).

The tensor names, shapes and keys are those clip.cpp (``tools/mtmd``) reads for ``idefics3``, as
llama.cpp's converter (``conversion/smolvlm.py``, ``MmprojModel``) writes them for a real SmolVLM.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from .files import temp_path_in
from .store.store import ModelStore
from .types import CreateRequest

NAME = "tiny-vision:latest"
SEED = 0
TEXT_WIDTH = 576  # smollm2:135m's embedding_length: the projector's output must match it
IMAGE_SIZE = 64  # one tile; the longest edge is resized to this too, so an image is 1 tile + 1 overview
PATCH_SIZE = 16
WIDTH = 64
FEED_FORWARD = 128
HEADS = 4
LAYERS = 2
SCALE_FACTOR = 2  # idefics3's pixel shuffle: 4x4 patches -> 2x2 tokens per tile
DESCRIPTION = ("tiny-vision: a plumbing fixture of ollama-magic, not a model that sees: an idefics3 projector "
               f"with random weights (seed {SEED}) for SmolLM2-135M-Instruct; its answers about images are meaningless")
LICENSE = (DESCRIPTION + ".\nThe text model is SmolLM2-135M-Instruct (Apache-2.0, Hugging Face); the projector's "
           "weights are random numbers and carry no license.")
#: image tokens one image becomes: (1 tile + 1 overview) x (IMAGE_SIZE / PATCH_SIZE / SCALE_FACTOR)^2
TOKENS_PER_IMAGE = 2 * (IMAGE_SIZE // PATCH_SIZE // SCALE_FACTOR) ** 2


def write_projector(path: Path, seed: int = SEED) -> Path:
    """Write the projector GGUF to ``path``: the same bytes for the same seed."""
    import gguf

    rng = np.random.default_rng(seed)

    def normal(*shape: int, std: float = 0.02) -> np.ndarray:
        return (rng.standard_normal(shape) * std).astype(np.float32)

    writer = gguf.GGUFWriter(str(path), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ])  # "clip"
    writer.add_type(gguf.GGUFType.MMPROJ)
    writer.add_name("tiny-vision projector")
    writer.add_description(DESCRIPTION)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_clip_projector_type(gguf.VisionProjectorType.IDEFICS3)
    writer.add_clip_has_vision_encoder(True)
    writer.add_vision_projection_dim(TEXT_WIDTH)
    writer.add_vision_image_size(IMAGE_SIZE)
    writer.add_vision_patch_size(PATCH_SIZE)
    writer.add_vision_embedding_length(WIDTH)
    writer.add_vision_feed_forward_length(FEED_FORWARD)
    writer.add_vision_block_count(LAYERS)
    writer.add_vision_head_count(HEADS)
    writer.add_vision_attention_layernorm_eps(1e-6)
    writer.add_vision_image_mean([0.5, 0.5, 0.5])
    writer.add_vision_image_std([0.5, 0.5, 0.5])
    writer.add_vision_projector_scale_factor(SCALE_FACTOR)
    writer.add_vision_use_gelu(True)
    writer.add_vision_preproc_image_size(IMAGE_SIZE)

    n_patches = (IMAGE_SIZE // PATCH_SIZE) ** 2
    # numpy shapes are PyTorch's (out, in); the gguf writer stores them reversed, as ggml's ne
    tensors: dict[str, np.ndarray] = {
        "v.patch_embd.weight": normal(WIDTH, 3, PATCH_SIZE, PATCH_SIZE, std=0.1),
        "v.patch_embd.bias": normal(WIDTH),
        "v.position_embd.weight": normal(n_patches, WIDTH, std=0.1),
    }
    for i in range(LAYERS):
        for part in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors[f"v.blk.{i}.{part}.weight"] = normal(WIDTH, WIDTH, std=0.1)
            tensors[f"v.blk.{i}.{part}.bias"] = normal(WIDTH)
        for norm in ("ln1", "ln2"):
            tensors[f"v.blk.{i}.{norm}.weight"] = np.ones(WIDTH, dtype=np.float32)
            tensors[f"v.blk.{i}.{norm}.bias"] = np.zeros(WIDTH, dtype=np.float32)
        tensors[f"v.blk.{i}.ffn_up.weight"] = normal(FEED_FORWARD, WIDTH, std=0.1)
        tensors[f"v.blk.{i}.ffn_up.bias"] = normal(FEED_FORWARD)
        tensors[f"v.blk.{i}.ffn_down.weight"] = normal(WIDTH, FEED_FORWARD, std=0.1)
        tensors[f"v.blk.{i}.ffn_down.bias"] = normal(WIDTH)
    tensors["v.post_ln.weight"] = np.ones(WIDTH, dtype=np.float32)
    tensors["v.post_ln.bias"] = np.zeros(WIDTH, dtype=np.float32)
    # strong enough that different images move the text model's logits visibly
    tensors["mm.model.fc.weight"] = normal(TEXT_WIDTH, WIDTH * SCALE_FACTOR**2, std=0.2)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def projector_blob(store: ModelStore) -> str:
    """The projector written into ``store``'s blobs (once: the bytes, hence the digest, never change)."""
    store.blobs.directory.mkdir(parents=True, exist_ok=True)
    staged = temp_path_in(store.blobs.directory)
    try:
        write_projector(staged)
        return store.blobs.adopt(staged)
    finally:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()


def tiny_vision_request(store: ModelStore, text: CreateRequest) -> CreateRequest:
    """``text`` (smollm2:135m's request: its GGUF, template and stops, from ``defaults``) plus the
    projector as a second file."""
    return text.model_copy(update={"files": {"mmproj-tiny-vision.gguf": projector_blob(store)}, "license": LICENSE})


__all__ = ["LICENSE", "NAME", "TOKENS_PER_IMAGE", "projector_blob", "tiny_vision_request", "write_projector"]
