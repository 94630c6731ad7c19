"""One llama.cpp sampler chain per sequence, so no request's output depends on its neighbours' options.

The chain is the one ``llama_cpp.Llama`` builds (``_init_sampler``), which is what the engine used
before batching: penalties, grammar, then greedy (temperature 0) or top-k, typical, top-p, min-p,
temperature and a seeded distribution. Penalties that change nothing are left out (a full-vocabulary
pass per token for nothing).

A chain that is llama.cpp's greedy sampler alone (temperature 0, no penalties, no grammar) picks the
first largest logit; :meth:`SamplerChain.sample` reads that with numpy from the logits row instead of
calling ``llama_sampler_sample``, which first copies the whole vocabulary into a candidate array
(262k entries on Gemma 3) for each sequence at each step. Same token (greedy's ``>`` keeps the first
maximum, as ``argmax`` does; a NaN row goes to llama.cpp), a fraction of the host time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import llama_cpp

from ..errors import InvalidRequest
from .grammar import check_grammar  # noqa: F401 - its old home
from .logprobs import logits_row

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


class SamplerChain:
    """A sequence's sampler; :meth:`sample` also records the token (penalty and grammar state).

    ``deferred``: the grammar is left out until :meth:`constrain` (a thinking trace first, see
    ``thinking.GrammarGate``); the constrained chain is then built with the same seed, its penalties
    told the tokens sampled so far."""

    def __init__(self, vocab: llama_cpp.llama_vocab_p, n_vocab: int, n_ctx: int, s: Sampling,
                 grammar: str | None, *, deferred: bool = False) -> None:
        self.seed = s.seed if s.seed >= 0 else random.getrandbits(32)
        self.vocab, self.n_vocab, self.n_ctx, self.settings = vocab, n_vocab, n_ctx, s
        self.pending_grammar = grammar if deferred else None
        self.history: list[int] = []
        self.chain = None
        self.chain = self._build(None if deferred else grammar)
        #: the chain is the greedy sampler alone, so :meth:`sample` may take the argmax itself
        self.argmax = s.temperature == 0 and not self._penalised() and not grammar

    def _penalised(self) -> bool:
        s = self.settings
        return bool(s.repeat_penalty != 1.0 or s.frequency_penalty or s.presence_penalty)

    def _build(self, grammar: str | None) -> llama_cpp.llama_sampler_p:
        s = self.settings
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = lambda sampler: llama_cpp.llama_sampler_chain_add(chain, sampler)  # noqa: E731
        if self._penalised():
            last_n = self.n_ctx if s.repeat_last_n < 0 else s.repeat_last_n
            add(llama_cpp.llama_sampler_init_penalties(self.n_vocab, last_n, s.repeat_penalty, s.frequency_penalty,
                                                       s.presence_penalty))
        if grammar:
            sampler = llama_cpp.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root")
            if not sampler:
                llama_cpp.llama_sampler_free(chain)
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
        return chain

    @property
    def deferred(self) -> bool:
        return self.pending_grammar is not None

    def constrain(self, *, drop_last: bool = False) -> None:
        """Turn the deferred grammar on from the next :meth:`sample` on; ``drop_last``: the token
        just sampled is being replaced (sampled again under the grammar), so penalties never see it."""
        grammar, self.pending_grammar = self.pending_grammar, None
        if grammar is None:
            return
        if drop_last:
            self.history = self.history[:-1]
        chain = self._build(grammar)
        self.argmax = False
        if self._penalised():
            penalties = llama_cpp.llama_sampler_chain_get(chain, 0)
            for token in self.history:
                llama_cpp.llama_sampler_accept(penalties, token)
        llama_cpp.llama_sampler_free(self.chain)
        self.chain = chain

    def sample(self, ctx: llama_cpp.llama_context_p, row: int) -> int:
        """The next token from batch row ``row`` of the last decode (the chain also accepts it).

        That row's logits stay readable with ``llama_get_logits_ith(ctx, row)`` until the next decode,
        for per-token extras such as logprobs.
        """
        if self.argmax:
            logits = logits_row(ctx, row, self.n_vocab)
            token = int(logits.argmax())
            if logits[token] == logits[token]:  # not NaN (greedy's ``>`` never picks one); greedy accepts nothing
                return token
        token = llama_cpp.llama_sampler_sample(self.chain, ctx, row)
        if self.pending_grammar is not None:
            self.history.append(token)
        return token

    def close(self) -> None:
        if self.chain:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None
