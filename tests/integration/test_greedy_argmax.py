"""The greedy shortcut (``SamplerChain.argmax``) against llama.cpp's own greedy sampler, token by token,
on the real models: the same token at every step."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import pytest

from ollama_magic.engine.llama_context import ContextShape, LlamaContext
from ollama_magic.engine.sampling import SamplerChain, Sampling



@pytest.mark.parametrize("model", ["smollm2", "gemma"])
def test_argmax_picks_what_llama_cpps_greedy_sampler_picks(model: str, smollm2_gguf: Path, gemma_blob: Path) -> None:
    path = smollm2_gguf if model == "smollm2" else gemma_blob
    lctx = LlamaContext(path, ContextShape(num_ctx=256, parallel=1, num_batch=64, threads=2, num_gpu=0,
                                           use_mmap=True))
    chain = SamplerChain(lctx.vocab, lctx.n_vocab, 256, Sampling(temperature=0), None)
    try:
        assert chain.argmax
        tokens = lctx.tokenize(b"The history of the printing press begins", add_bos=True)
        entries = [(t, i, 0, i == len(tokens) - 1) for i, t in enumerate(tokens)]
        row, n_past = len(tokens) - 1, len(tokens)
        for _ in range(32):
            assert lctx.decode(entries) == 0
            ours = chain.sample(lctx.ctx, row)
            theirs = llama_cpp.llama_sampler_sample(chain.chain, lctx.ctx, row)
            assert ours == theirs
            entries, row, n_past = [(ours, n_past, 0, True)], 0, n_past + 1
    finally:
        chain.close()
        lctx.close()
