"""The greedy chain's shortcut (``SamplerChain.argmax``): the token llama.cpp's greedy sampler would
pick, read from the logits row with numpy. The logits come from a numpy buffer here (no model); the
integration test ``test_greedy_argmax.py`` checks the same against llama.cpp's sampler on a real model."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest

from ollama_magic.engine import sampling
from ollama_magic.engine.sampling import SamplerChain, Sampling

C_SAMPLED = 777  # what the (patched) llama.cpp sampler answers


@pytest.fixture
def rows(monkeypatch: pytest.MonkeyPatch) -> dict[int, np.ndarray]:
    """Batch rows -> logits; llama_get_logits_ith reads them, llama_sampler_sample answers C_SAMPLED."""
    table: dict[int, np.ndarray] = {}

    def logits_ith(ctx: object, row: int) -> object:
        return table[row].ctypes.data_as(ctypes.POINTER(ctypes.c_float))

    monkeypatch.setattr(llama_cpp, "llama_get_logits_ith", logits_ith)
    monkeypatch.setattr(sampling.llama_cpp, "llama_sampler_sample", lambda chain, ctx, row: C_SAMPLED)
    return table


def chain(n_vocab: int = 6, **settings: float) -> SamplerChain:
    return SamplerChain(None, n_vocab, 64, Sampling(**{"temperature": 0, **settings}), None)  # type: ignore[arg-type]


def test_greedy_takes_the_first_largest_logit(rows: dict[int, np.ndarray]) -> None:
    rows[0] = np.array([0.5, 3.0, -1.0, 3.0, 2.0, 0.0], dtype=np.float32)
    rows[1] = np.array([9.0, 3.0, -1.0, 3.0, 2.0, 9.0], dtype=np.float32)
    s = chain()
    assert s.argmax
    assert (s.sample(object(), 0), s.sample(object(), 1)) == (1, 0)
    s.close()


def test_a_row_with_nan_goes_to_llama_cpp(rows: dict[int, np.ndarray]) -> None:
    rows[0] = np.array([0.5, np.nan, 1.0, 0.0, 0.0, 0.0], dtype=np.float32)
    s = chain()
    assert s.sample(object(), 0) == C_SAMPLED
    s.close()


@pytest.mark.parametrize("settings", [{"temperature": 0.8}, {"temperature": -1}, {"repeat_penalty": 1.1},
                                      {"presence_penalty": 0.5}, {"frequency_penalty": 0.5}])
def test_any_other_chain_samples_in_llama_cpp(rows: dict[int, np.ndarray], settings: dict[str, float]) -> None:
    rows[0] = np.array([0.5, 3.0, -1.0, 3.0, 2.0, 0.0], dtype=np.float32)
    s = chain(**settings)
    assert not s.argmax
    assert s.sample(object(), 0) == C_SAMPLED
    s.close()
