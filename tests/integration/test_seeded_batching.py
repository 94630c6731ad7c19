"""The batch rule under which llama.cpp gives a sequence the same logits, bit for bit, beside other
sequences as alone (bench/seeded_batching.py, docs/BENCHMARKS.md "Seeded and batched"): a KV stream per
sequence, one token per slot in every step (idle slots padded), each prompt in a decode of its own.
Held on both embedded models; a llama.cpp upgrade that breaks it fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.seeded_batching import PROMPTS, RULES, RuleContext, compare, run
from ollama_magic.engine.llama_context import ContextShape

pytestmark = pytest.mark.integration

SAME_BITS = next(r for r in RULES if r.name == "streams + pad + prompt own decode")


def logits_alone_and_beside(path: Path, steps: int = 16) -> tuple[bool, int | None]:
    shape = ContextShape(num_ctx=512, parallel=4, num_batch=512, threads=2, num_gpu=0, use_mmap=True,
                         flash_attn=SAME_BITS.flash_attn)
    lctx = RuleContext(path, shape, SAME_BITS.unified)
    try:
        target, *others = [lctx.tokenize(p.encode(), add_bos=True) for p in PROMPTS]
        alone = run(lctx, SAME_BITS, target, others, steps, beside=False)
        beside = run(lctx, SAME_BITS, target, others, steps, beside=True)
    finally:
        lctx.close()
    identical, first, _ = compare(alone, beside)
    return identical, first


def test_same_bits_beside_others_smollm2(smollm2_gguf: Path) -> None:
    assert logits_alone_and_beside(smollm2_gguf) == (True, None)


def test_same_bits_beside_others_gemma3(gemma_blob: Path) -> None:
    assert logits_alone_and_beside(gemma_blob) == (True, None)
