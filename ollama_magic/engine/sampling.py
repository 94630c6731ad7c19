"""One llama.cpp sampler chain per sequence, so no request's output depends on its neighbours' options.

The chain is the one ``llama_cpp.Llama`` builds (``_init_sampler``), which is what the engine used
before batching: penalties, grammar, then greedy (temperature 0) or top-k, typical, top-p, min-p,
temperature and a seeded distribution. Penalties that change nothing are left out (a full-vocabulary
pass per token for nothing).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import llama_cpp

from ..errors import InvalidRequest

DEFAULT_SEED = 0xFFFFFFFF


@dataclass
class Sampling:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1


def check_grammar(vocab: llama_cpp.llama_vocab_p, gbnf: str) -> None:
    """An invalid grammar segfaults llama.cpp at sampling time; try it once on its own first."""
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
    if not sampler:
        raise InvalidRequest("the format schema could not be turned into a grammar")
    llama_cpp.llama_sampler_free(sampler)


class SamplerChain:
    """A sequence's sampler; :meth:`sample` also records the token (penalty and grammar state)."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p, n_vocab: int, n_ctx: int, s: Sampling,
                 grammar: str | None) -> None:
        self.seed = s.seed if s.seed >= 0 else random.getrandbits(32)
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self.chain = chain
        add = lambda sampler: llama_cpp.llama_sampler_chain_add(chain, sampler)  # noqa: E731
        if s.repeat_penalty != 1.0 or s.frequency_penalty or s.presence_penalty:
            last_n = n_ctx if s.repeat_last_n < 0 else s.repeat_last_n
            add(llama_cpp.llama_sampler_init_penalties(n_vocab, last_n, s.repeat_penalty, s.frequency_penalty,
                                                       s.presence_penalty))
        if grammar:
            sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
            if not sampler:
                self.close()
                raise InvalidRequest("the format schema could not be turned into a grammar")
            add(sampler)
        if s.temperature < 0:
            add(llama_cpp.llama_sampler_init_dist(self.seed))
        elif s.temperature == 0:
            add(llama_cpp.llama_sampler_init_greedy())
        else:
            add(llama_cpp.llama_sampler_init_top_k(s.top_k))
            add(llama_cpp.llama_sampler_init_typical(s.typical_p, 1))
            add(llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
            add(llama_cpp.llama_sampler_init_min_p(s.min_p, 1))
            add(llama_cpp.llama_sampler_init_temp(s.temperature))
            add(llama_cpp.llama_sampler_init_dist(self.seed))

    def sample(self, ctx: llama_cpp.llama_context_p, row: int) -> int:
        """The next token from batch row ``row`` of the last decode (the chain also accepts it).

        That row's logits stay readable with ``llama_get_logits_ith(ctx, row)`` until the next decode,
        for per-token extras such as logprobs.
        """
        return llama_cpp.llama_sampler_sample(self.chain, ctx, row)

    def close(self) -> None:
        if self.chain:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None
