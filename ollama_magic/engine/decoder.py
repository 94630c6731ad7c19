"""Continuous batching: several sequences of one model decoded together, one ``llama_decode`` per step.

llama.cpp reads the model's weights once per ``llama_decode`` whatever the number of sequences in
the batch, so on a CPU (memory bound) 4 sequences cost little more than one. Each step (as in
llama-server's ``update_slots``): admit waiting jobs into free slots, build one batch with a prompt
chunk of every new sequence and the last token of every decoding one, decode it, sample each
sequence with its own sampler chain, hand out its text, and retire finished or cancelled sequences.

Slots keep the tokens of their last sequence in the KV cache: a new job goes to the free slot whose
cached tokens share the longest prefix with its prompt, so turn N of a chat only evaluates what is new.

Shared prefixes: when another slot's cells (a running sequence's or a finished one's) share a longer
prefix with a new job's prompt than the free slot's own do, the new sequence starts from those cells
(``LlamaContext.share``: in the unified cache the cells are marked as its too, neither copied nor
evaluated again). A job whose prompt shares at least ``MIN_SHARED_PREFIX`` tokens with a prompt still
being read waits for that reading to pass them, so a column of rows behind one long instruction
evaluates the instruction once, not once per slot.

Choice jobs (``GenerationJob.choices``): after the prompt the decoder samples nothing; it feeds each
label's tokens as if they had been generated and reads each one's log probability, so a label's numbers
are those a generation of it would report. Every label's first token is read from the prompt's last
row; the later tokens of each label are fed one per step, and the cells a label wrote are dropped
before the next label starts from the prompt's end.

Seeded jobs: llama.cpp's float results depend on the batch's make-up (which kernels run, where a
sequence's cells lie in the shared cache), so a seeded job beside others would not give the text it
gives alone. A seeded job therefore runs alone, on a cleared cache, evaluated from scratch: the same
seed gives the same text whatever else is queued and across reloads, at the price of waiting for the
running sequences to finish and of pausing the others while it runs.

LoRA scales (``lora.py``): every job runs under a vector of adapter scales, and llama.cpp holds one set
per context. Each step decodes only the sequences whose vector is the oldest running sequence's (the
others wait, as llama-server's ``can_batch_with`` keeps slots of different LoRA configurations out of
one batch), and sets the context's scales only when that vector changes. A slot's cells remember the
vector they were computed under: no prompt reuses or shares cells of another vector.

Context shift: a sequence that fills its slot (``num_ctx`` tokens) discards half of what follows its
first ``num_keep`` tokens from its KV cells and moves the rest down (``llama_memory_seq_rm`` and
``llama_memory_seq_add``, as llama-server's context shift), unless its job says ``shift=False``: then
it ends with done_reason "length". Prompts arrive fitted (``context_window.fit_prompt``).
"""

from __future__ import annotations

import codecs
import logging
import queue
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import InvalidRequest, OllamaMagicError
from .context_window import shift_discard
from .images import NO_VISION
from .jobs import EngineError, Finished, GenerationJob, Token
from .llama_context import LlamaContext
from .logprobs import TokenProb, row_logprobs
from .sampling import SamplerChain
from .text import partial_suffix
from .thinking import GrammarGate

log = logging.getLogger("ollama_magic")


class TextAssembler:
    """A sequence's bytes -> text pieces: whole UTF-8 characters only, and stop strings held back so
    that a stop string never reaches the caller, not even in pieces.

    Each token's log probability (when asked for) travels with the text it produced: it is handed on
    with the piece in which its text begins, so a token held back as a possible stop string keeps its
    value until its text is emitted. Tokens wholly inside a stop string are dropped with it (as
    llama-server drops them); one that straddles it goes out, since part of its text did."""

    def __init__(self, stops: list[str], emit: Callable[[str, list[TokenProb]], None]) -> None:
        self.stops = [s for s in stops if s]
        self.emit = emit
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""
        self.emitted = 0  # characters handed on so far
        self.total = 0  # characters decoded so far (handed on + pending)
        self.probs: deque[tuple[int, int, TokenProb]] = deque()  # (start, end) of each token's text
        self.stopped_by: str | None = None

    def add(self, piece: bytes, prob: TokenProb | None = None) -> bool:
        """Append a token's bytes; True when a stop string was hit."""
        new = self.decoder.decode(piece)
        if prob is None and not self.stops and not self.probs:  # nothing to hold back: hand it on as it is
            if new:
                self.total += len(new)
                self.emitted += len(new)
                self.emit(new, [])
            return False
        if prob is not None:
            self.probs.append((self.total, self.total + len(new), prob))
        self.total += len(new)
        self.pending += new
        before = self.pending
        text, self.pending, hit = split_at_stop(self.pending, self.stops)
        if hit:  # the stop string that ended the reply (Anthropic's stop_sequence names it)
            self.stopped_by = next((s for s in self.stops if before.startswith(s, len(text))), None)
        self._hand_on(text, cut=hit)
        return hit

    def finish(self) -> None:
        self.pending += self.decoder.decode(b"", final=True)
        text = ""
        if self.pending:
            text, _, _ = split_at_stop(self.pending, self.stops, final=True)
        self.pending = ""
        self.emitted += len(text)
        released = [p for _, _, p in self.probs]
        self.probs.clear()
        if text or released:
            self.emit(text, released)

    def _hand_on(self, text: str, cut: bool) -> None:
        """Emit ``text``, with every token whose text starts in it (a token holding only part of a
        character goes with that character); at a stop string the tokens after it are dropped."""
        self.emitted += len(text)
        released: list[TokenProb] = []
        while self.probs and self.probs[0][0] < self.emitted:
            released.append(self.probs.popleft()[2])
        if cut:
            self.probs.clear()
        if text or released:
            self.emit(text, released)


def split_at_stop(text: str, stops: list[str], final: bool = False) -> tuple[str, str, bool]:
    """-> (text safe to emit, text held back, whether a stop string was hit)."""
    if not stops:
        return text, "", False
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    if cut >= 0:
        return text[:cut], "", True
    if final:
        return text, "", False
    hold = partial_suffix(text, stops)
    return text[: len(text) - hold], text[len(text) - hold :], False


@dataclass
class Slot:
    """One of the context's sequence ids and the tokens its KV cells hold now."""

    seq_id: int
    #: the tokens in the KV cells, in position order; STALE for cells a context shift moved (they were
    #: computed with tokens that are gone, so no later prompt may reuse them)
    cached: list[int] = field(default_factory=list)
    last_used: float = 0.0
    sequence: "Sequence | None" = None
    #: how many of its first cells other sequences may hold too (``Decoder._share_prefix``): a context
    #: shift moves a cell's position for every sequence holding it, so it must not move these
    shared: int = 0
    #: the LoRA scales its cells were computed under: a prompt under other scales reuses none of them
    lora: tuple[float, ...] = ()


class Sequence:
    """A job being decoded in a slot."""

    def __init__(self, job: GenerationJob, out: "queue.Queue[Any]", slot: Slot, tokens: list[int], keep: int,
                 sampler: SamplerChain, limit: int, num_ctx: int,
                 post: Callable[["queue.Queue[Any]", Any], None] | None = None, lora: tuple[float, ...] = ()) -> None:
        self.job, self.out, self.slot, self.tokens, self.sampler = job, out, slot, tokens, sampler
        self.lora = lora  # the adapter scales it decodes under
        #: how results reach ``out``: the decoder's outbox (see ``Decoder._post``), or straight in
        self.post = post or (lambda q, item: q.put(item))
        self.pending = tokens[keep:]  # prompt tokens still to evaluate
        self.n_past = keep
        self.limit = limit
        self.num_ctx = num_ctx
        self.shifts = 0  # context shifts so far
        self.generated: list[int] = []
        self.next_token: int | None = None  # sampled, not yet fed back
        self.held: list[str] = []
        self.held_probs: list[TokenProb] = []
        self.text = TextAssembler(job.stop, self._emit if job.stream else self._hold)
        #: a grammar waiting for the thinking trace to close (None: no grammar, or it applies already)
        self.gate = GrammarGate(*job.trace_tags, job.trace_started) if sampler.deferred and job.trace_tags else None
        self.start = time.perf_counter_ns()
        self.first = 0
        self.done_reason: str | None = None
        #: a choice job's labels' log probabilities, token by token, and the label being fed now
        self.scored: list[list[float]] = [[] for _ in job.choices]
        self.label = -1

    def _emit(self, text: str, probs: list[TokenProb]) -> None:
        self.post(self.out, Token(text, probs))

    def _hold(self, text: str, probs: list[TokenProb]) -> None:
        self.held.append(text)
        self.held_probs.extend(probs)

    @property
    def exclusive(self) -> bool:
        return self.job.sampling.seed >= 0

    def finish(self) -> Finished:
        end = time.perf_counter_ns()
        if not self.job.cancel.is_set():
            self.text.finish()
        if self.held or self.held_probs:
            self.post(self.out, Token("".join(self.held), self.held_probs))
        first = self.first or end
        prompt = self.tokens if self.job.media is None else [t for t in self.tokens if t >= 0]  # no image stand-ins
        return Finished(
            done_reason=self.done_reason or "stop", prompt_eval_count=len(self.tokens),
            prompt_eval_duration=max(1, first - self.start), eval_count=len(self.generated),
            eval_duration=max(1, end - first), context=prompt + self.generated, scored=list(self.scored),
            stop_sequence=self.text.stopped_by,
        )


#: A cached cell whose KV no fresh evaluation would give (see ``Slot.cached``); never a token id.
STALE = -1
#: A queued job waits for a prompt being read that shares at least this many tokens with its own (see
#: the module docstring): a shorter common start (a chat template's first tokens) is not worth a wait.
MIN_SHARED_PREFIX = 32


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Decoder:
    """The step loop's state: slots, waiting jobs, and the owned llama.cpp context."""

    #: start sequences from other slots' cells (see the module docstring); off only to measure it
    share_prefixes = True

    def __init__(self, lctx: LlamaContext, on_admit: Callable[[], None], projector: Any = None,
                 sampler_factory: Callable[..., SamplerChain] = SamplerChain) -> None:
        self.lctx = lctx
        #: builds each sequence's sampler chain (``SamplerChain``'s signature); tests inject fakes
        self.sampler_factory = sampler_factory
        self.projector = projector  # vision.Projector when the model has one
        self.num_ctx = lctx.shape.num_ctx
        self.slots = [Slot(seq_id=i) for i in range(lctx.shape.parallel)]
        self.waiting: deque[tuple[GenerationJob, queue.Queue[Any]]] = deque()
        self.on_admit = on_admit  # a job left the queue (admitted or dropped): for OLLAMA_MAX_QUEUE
        self.tokens_decoded = 0  # every token ever put through llama_decode (tests watch it)
        self.peak_active = 0  # most sequences decoded together so far
        self._turn = 0
        #: results of this step, put into their outputs when the step ends (see ``_post``)
        self._outbox: list[tuple[queue.Queue[Any], Any]] = []
        #: token -> (ends the generation, its bytes): the vocabulary does not change under a context
        self._tokens: dict[int, tuple[bool, bytes]] = {}

    def _lora(self, job: GenerationJob) -> tuple[float, ...]:
        """The job's adapter scales (None: the model's own, 1.0 each), one per adapter."""
        n = len(self.lctx.adapters)
        scales = job.lora if job.lora is not None else (1.0,) * n
        if len(scales) != n:
            raise EngineError(f"{len(scales)} LoRA scales for a model with {n} adapters")
        return tuple(scales)

    @staticmethod
    def _prefix(slot: Slot, tokens: list[int], lora: tuple[float, ...]) -> int:
        """The prompt tokens ``slot``'s cells hold, as computed under ``lora`` (none under other scales)."""
        return common_prefix(slot.cached, tokens) if slot.lora == lora else 0

    def submit(self, job: GenerationJob, out: "queue.Queue[Any]") -> None:
        self.waiting.append((job, out))

    def busy(self) -> bool:
        return bool(self.waiting) or any(s.sequence for s in self.slots)

    def active(self) -> list[Sequence]:
        return [s.sequence for s in self.slots if s.sequence is not None]

    # ---- admission ------------------------------------------------------------------------------

    def _drop_cancelled(self) -> None:
        """Jobs cancelled while queued still end (a "cancelled" Finished), so no consumer waits forever."""
        if not any(job.cancel.is_set() for job, _ in self.waiting):
            return
        kept: deque[tuple[GenerationJob, queue.Queue[Any]]] = deque()
        for job, out in self.waiting:
            if job.cancel.is_set():
                self.on_admit()
                out.put(Finished("cancelled", len(job.tokens), 1, 0, 1, [t for t in job.tokens if t >= 0]))
            else:
                kept.append((job, out))
        self.waiting = kept

    def _admit(self) -> None:
        self._drop_cancelled()
        while self.waiting:
            job, out = self.waiting[0]
            running = self.active()
            if any(s.exclusive for s in running):
                return
            seeded = job.sampling.seed >= 0
            if seeded and running:
                return  # FIFO: a seeded job waits for the running ones, and nothing passes it
            free = [s for s in self.slots if s.sequence is None]
            if not free:
                return
            if not seeded and job.media is None and self.share_prefixes and self._prefix_being_read(job, running):
                return  # FIFO: it starts from those cells in a step or two (see the module docstring)
            self.waiting.popleft()
            self.on_admit()
            try:
                self._start(job, out, free, seeded)
            except BaseException as exc:  # noqa: BLE001 - delivered to that job's consumer
                out.put(exc)

    def _start(self, job: GenerationJob, out: "queue.Queue[Any]", free: list[Slot], seeded: bool) -> None:
        n_ctx = self.num_ctx
        tokens = list(job.tokens)
        media = job.media
        if media is not None and len(tokens) >= n_ctx:
            raise InvalidRequest(f"the prompt and its images take {len(tokens)} tokens, more than the context "
                                 f"holds (num_ctx {n_ctx}): send fewer or smaller images, or raise num_ctx")
        if len(tokens) >= n_ctx:  # the engine fits every prompt first (context_window.fit_prompt)
            raise EngineError(f"a prompt of {len(tokens)} tokens reached the decoder unfitted (num_ctx {n_ctx})")
        if job.choices and (not tokens or len(tokens) + max(map(len, job.choices)) > n_ctx or not all(job.choices)):
            raise EngineError("a choice job needs a prompt, and non-empty labels that fit the context after it")
        most = len(tokens) - 1  # at least one token left to evaluate, for fresh logits
        lora = self._lora(job)
        if seeded:
            self.lctx.clear()  # evaluated from scratch, alone: see the module docstring
            for s in self.slots:
                s.cached = []
            slot, reuse = self.slots[0], 0
        else:
            slot = max(free, key=lambda s: (self._prefix(s, tokens, lora), -s.last_used))
            reuse = min(self._prefix(slot, tokens, lora), most)
            if media is None and self.share_prefixes:
                reuse = self._share_prefix(slot, tokens, reuse, most, lora)
        if media is not None:
            reuse = media.reusable(reuse)
        if not self.lctx.forget(slot.seq_id, reuse) or not self.lctx.reusable(slot.seq_id, reuse):
            self.lctx.forget(slot.seq_id, 0)
            reuse = 0
        slot.cached = slot.cached[:reuse]
        slot.shared = min(slot.shared, reuse)
        slot.lora = lora
        sampler = self.sampler_factory(self.lctx.vocab, self.lctx.n_vocab, n_ctx, job.sampling, job.grammar,
                               deferred=bool(job.grammar and job.trace_tags))
        # -1: at most one context's worth of tokens (shifting as needed); -2: until the context is full
        limit = job.num_predict if job.num_predict >= 0 else n_ctx
        seq = Sequence(job, out, slot, tokens, reuse, sampler, limit, n_ctx, self._post, lora)
        if media is not None:
            try:
                self.lctx.set_lora(lora)  # its image and text parts are decoded now, under its scales
                self._evaluate_media(seq)
            except BaseException:
                self.lctx.forget(slot.seq_id, 0)
                slot.cached = []
                sampler.close()
                raise
            finally:
                media.close()
        slot.sequence = seq
        if limit == 0 and not job.choices:
            self._retire(seq, "length")

    def _prefix_being_read(self, job: GenerationJob, running: list[Sequence]) -> bool:
        """Whether a running sequence is still reading a prompt that shares at least
        ``MIN_SHARED_PREFIX`` tokens with the job's, not all of those it could take in its cells yet
        (the job should wait and share them)."""
        most = len(job.tokens) - 1  # as in ``_start``
        try:
            lora = self._lora(job)
        except EngineError:
            return False  # ``_start`` refuses it, to its own consumer
        for seq in running:
            if not seq.pending or seq.job.media is not None or seq.lora != lora:
                continue
            shared = min(common_prefix(seq.tokens, job.tokens), most)
            if shared >= MIN_SHARED_PREFIX and len(seq.slot.cached) < shared:
                return True
        return False

    def _share_prefix(self, slot: Slot, tokens: list[int], reuse: int, most: int,
                      lora: tuple[float, ...] = ()) -> int:
        """Start ``slot`` from another slot's cells (computed under the same LoRA scales ``lora``) when
        they share more of ``tokens`` than its own: -> the prompt tokens its sequence need not evaluate."""
        donor = max((s for s in self.slots if s is not slot), key=lambda s: self._prefix(s, tokens, lora),
                    default=None)
        shared = min(self._prefix(donor, tokens, lora), most) if donor is not None else 0
        if shared <= reuse or not self.lctx.reusable(donor.seq_id, shared):
            return reuse
        self.lctx.forget(slot.seq_id, 0)
        self.lctx.share(donor.seq_id, slot.seq_id, shared)
        slot.cached = donor.cached[:shared]
        slot.shared = shared
        donor.shared = max(donor.shared, shared)
        return shared

    def _evaluate_media(self, seq: Sequence) -> None:
        """Evaluate an image request's parts now, alone, up to its last text part, which is left
        pending for the batched prefill (it gives the logits the first token is sampled from).

        The simple version: the other sequences wait while an image is encoded (milliseconds for
        small towers, seconds for big ones on a CPU) instead of interleaving with it.
        """
        media = seq.job.media
        if self.projector is None:
            raise InvalidRequest(NO_VISION)
        starts = media.part_starts()
        if media.parts[-1].is_image:
            raise InvalidRequest("the prompt ends with an image: put some text after it")
        for part, start in zip(media.parts[:-1], starts[:-1]):
            end = start + part.length
            if end <= seq.n_past:
                continue  # reused from the slot's cache
            if not part.is_image:
                self._decode_alone(seq, part.tokens[seq.n_past - start :])
            else:
                position = self.projector.evaluate(part, seq.n_past, seq.slot.seq_id)
                if position != end:
                    raise EngineError(f"an image took {position - start} positions for {part.n_tokens} tokens")
                self.tokens_decoded += part.n_tokens
            seq.slot.cached.extend(seq.tokens[seq.n_past : end])
            seq.n_past = end
        seq.pending = seq.tokens[seq.n_past :]

    def _decode_alone(self, seq: Sequence, tokens: list[int]) -> None:
        for i in range(0, len(tokens), self.lctx.n_batch):
            piece = tokens[i : i + self.lctx.n_batch]
            entries = [(t, seq.n_past + i + k, seq.slot.seq_id, False) for k, t in enumerate(piece)]
            code = self.lctx.decode(entries)
            if code != 0:
                raise EngineError(f"llama_decode failed ({code}) on {len(piece)} prompt tokens before an image")
            self.tokens_decoded += len(piece)

    # ---- one step -------------------------------------------------------------------------------

    def step(self) -> None:
        try:
            self._step()
        finally:
            self._flush()

    def _post(self, out: "queue.Queue[Any]", item: Any) -> None:
        """Hand ``item`` to a job's output when the step ends, not now.

        A put wakes that job's consumer thread, which then waits for the GIL; the next ctypes call of
        this thread (a sampler, a token's piece) releases it, and the consumer's Python would run there,
        between two decodes, instead of during the next ``llama_decode``. The order of each output's
        items is kept."""
        self._outbox.append((out, item))

    def _flush(self) -> None:
        outbox, self._outbox = self._outbox, []
        for out, item in outbox:
            out.put(item)

    def _token(self, token: int) -> tuple[bool, bytes]:
        """(whether ``token`` ends the generation, its bytes), asked of llama.cpp once per token id."""
        known = self._tokens.get(token)
        if known is None:
            known = self._tokens[token] = (self.lctx.is_eog(token), self.lctx.piece(token))
        return known

    def _step(self) -> None:
        self._admit()
        for seq in self.active():
            if seq.job.cancel.is_set():
                self._retire(seq, "stop")
        running = self.active()
        if not running:
            return
        lora = min(running, key=lambda s: s.start).lora  # the oldest sequence's scales this step
        running = [s for s in running if s.lora == lora]
        self.lctx.set_lora(lora)
        self.peak_active = max(self.peak_active, len(running))
        capacity = self.lctx.n_batch  # at least the slot count (LlamaContext sizes it so); bounded anyway
        while True:
            entries, outputs, fed = self._batch(running, capacity)
            if not entries:
                return
            code = self.lctx.decode(entries)
            if code == 1 and len(entries) > 1:
                # No KV slot for this many tokens: retry with half the batch, as llama-server does
                # (llama_decode returns 1 before it computes anything, so nothing needs undoing).
                capacity = max(1, len(entries) // 2)
                continue
            break
        if code != 0:
            error = EngineError(f"llama_decode failed ({code}) with {len(entries)} tokens in {len(running)} sequences")
            for seq in running:
                self.lctx.forget(seq.slot.seq_id, 0)
                seq.slot.cached = []
                self._fail(seq, error)
            return
        self.tokens_decoded += len(entries)
        # What each sequence fed in is now in its KV cells.
        for seq, n in fed:
            if seq.next_token is not None:
                seq.slot.cached.append(seq.next_token)
                seq.next_token = None
            else:
                seq.slot.cached.extend(seq.pending[:n])
                seq.pending = seq.pending[n:]
            seq.n_past += n
        for seq, row in outputs:
            try:
                if seq.job.choices:
                    self._score(seq, row)
                    continue
                self._advance(seq, row)
            except BaseException as exc:  # noqa: BLE001 - one sequence's failure ends that sequence only
                if seq.slot.sequence is not seq:
                    continue  # it had already finished; its consumer has its result
                log.exception("sequence in slot %d failed", seq.slot.seq_id)
                self.lctx.forget(seq.slot.seq_id, 0)  # cells it may have half-written are not reused
                seq.slot.cached = []
                self._fail(seq, exc if isinstance(exc, OllamaMagicError) else EngineError(f"generation failed: {exc}"))

    def _batch(self, running: list[Sequence], capacity: int
               ) -> tuple[list[tuple[int, int, int, bool]], list[tuple[Sequence, int]], list[tuple[Sequence, int]]]:
        """One decode's entries (at most ``capacity``): the last token of every decoding sequence
        (taking turns should they outnumber the batch), then prompt chunks sharing what is left.
        -> (entries, (sequence, batch row) of each output, (sequence, tokens it fed)). Changes nothing."""
        entries: list[tuple[int, int, int, bool]] = []
        outputs: list[tuple[Sequence, int]] = []
        fed: list[tuple[Sequence, int]] = []
        order = running
        if len(running) > capacity:  # a short batch (never with LlamaContext's sizing): take turns
            self._turn = (self._turn + 1) % len(running)
            order = running[self._turn:] + running[:self._turn]
        for seq in order:
            if seq.next_token is not None and len(entries) < capacity:
                fed.append((seq, 1))
                outputs.append((seq, len(entries)))
                entries.append((seq.next_token, seq.n_past, seq.slot.seq_id, True))
        budget = capacity - len(entries)
        prefilling = [s for s in running if s.pending and s.next_token is None]
        for i, seq in enumerate(prefilling):
            share = max(1, budget // (len(prefilling) - i)) if budget > 0 else 0
            chunk = seq.pending[:share]
            if not chunk:
                continue
            fed.append((seq, len(chunk)))
            for k, token in enumerate(chunk):
                last = k == len(chunk) - 1 and len(chunk) == len(seq.pending)
                if last:
                    outputs.append((seq, len(entries)))
                entries.append((token, seq.n_past + k, seq.slot.seq_id, last))
            budget -= len(chunk)
        return entries, outputs, fed

    def _advance(self, seq: Sequence, row: int) -> None:
        """Sample this sequence's next token from batch row ``row``; emit or retire it."""
        lctx = self.lctx
        token = seq.sampler.sample(lctx.ctx, row)
        if not seq.first:
            seq.first = time.perf_counter_ns()
        if seq.job.cancel.is_set():
            return self._retire(seq, "stop")
        eog, piece = self._token(token)
        if seq.gate is not None and not eog:
            verdict = seq.gate.add(piece.decode("utf-8", errors="replace"))
            if verdict != GrammarGate.FREE:
                seq.gate = None
                seq.sampler.constrain(drop_last=verdict == GrammarGate.RESAMPLE)
                if verdict == GrammarGate.RESAMPLE:  # the reply skipped its trace: this token obeys the grammar too
                    token = seq.sampler.sample(lctx.ctx, row)
                    eog, piece = self._token(token)
        if eog:
            return self._retire(seq, "stop")
        seq.generated.append(token)
        prob = None
        if seq.job.logprobs:
            prob = row_logprobs(lctx.ctx, row, lctx.n_vocab, token, seq.job.top_logprobs, lambda _t: piece,
                                lambda t: lctx.piece(t, special=True))
        if seq.text.add(piece, prob):
            return self._retire(seq, "stop")
        if len(seq.generated) >= seq.limit or not self._room_for_next(seq):
            return self._retire(seq, "length")
        seq.next_token = token

    def _score(self, seq: Sequence, row: int) -> None:
        """A choice job's step (see the module docstring): read batch row ``row`` for the label being
        fed, or for every label's first token at the prompt's end; then feed the next label token."""
        if seq.job.cancel.is_set():
            return self._retire(seq, "stop")
        labels = seq.job.choices
        if not seq.first:
            seq.first = time.perf_counter_ns()
        if seq.label < 0:  # the prompt's last row
            for scored, value in zip(seq.scored, self.lctx.logprobs(row, [label[0] for label in labels])):
                scored.append(value)
        else:
            label = labels[seq.label]
            seq.scored[seq.label].append(self.lctx.logprob(row, label[len(seq.scored[seq.label])]))
        if seq.label >= 0 and len(seq.scored[seq.label]) < len(labels[seq.label]):
            seq.next_token = labels[seq.label][len(seq.scored[seq.label]) - 1]
            return
        following = [i for i in range(seq.label + 1, len(labels)) if len(labels[i]) > 1]
        if not following:
            return self._retire(seq, "stop")
        prompt_end = len(seq.tokens)
        if seq.label >= 0:  # the cells the last label wrote go; the next one starts from the prompt's end
            self.lctx.forget(seq.slot.seq_id, prompt_end)
            seq.slot.cached = seq.slot.cached[:prompt_end]
            seq.n_past = prompt_end
        seq.label = following[0]
        seq.next_token = labels[seq.label][0]

    def _room_for_next(self, seq: Sequence) -> bool:
        """Whether the sampled token can go into the sequence's slot, shifting its context if full."""
        if seq.n_past < seq.num_ctx:
            return True
        if not seq.job.shift or seq.job.num_predict == -2:
            return False
        keep = min(seq.job.num_keep, seq.n_past)
        # cells other sequences hold too are dropped from this one, never moved (see ``Slot.shared``)
        discard = max(shift_discard(seq.n_past, keep), seq.slot.shared - keep)
        if discard < 1 or not self.lctx.shift(seq.slot.seq_id, keep, discard, seq.n_past):
            log.warning("cannot shift the context of a full sequence (keep %d of %d); stopping", keep, seq.n_past)
            return False
        cached = seq.slot.cached
        seq.slot.cached = cached[:keep] + [STALE] * (len(cached) - keep - discard)
        seq.slot.shared = min(seq.slot.shared, keep)  # it holds no shared cell past ``keep`` any more
        seq.n_past -= discard
        seq.shifts += 1
        log.debug("context shift: kept %d, discarded %d, %d in the slot now", keep, discard, seq.n_past)
        return True

    def _retire(self, seq: Sequence, reason: str) -> None:
        seq.done_reason = reason
        slot = seq.slot
        slot.sequence = None
        slot.last_used = time.monotonic()
        seq.sampler.close()
        try:
            self._post(seq.out, seq.finish())
        except BaseException as exc:  # noqa: BLE001
            self._post(seq.out, exc)

    def _fail(self, seq: Sequence, error: OllamaMagicError) -> None:
        seq.slot.sequence = None
        seq.sampler.close()
        self._post(seq.out, error)

    def fail_all(self, error: OllamaMagicError) -> None:
        """The model is going away: every waiting and running job ends with ``error``."""
        for seq in self.active():
            self._fail(seq, error)
        self._flush()
        while self.waiting:
            _, out = self.waiting.popleft()
            self.on_admit()
            out.put(error)

    def occupancy(self) -> tuple[int, int, int, int]:
        """(slots decoding now, slots, tokens held in KV cells summed over slots, cells of the cache), for
        metrics read from any thread at scrape time: plain reads of Python lists the owner thread
        updates, never a llama.cpp call (only the owner thread may make those)."""
        slots = list(self.slots)
        return (sum(s.sequence is not None for s in slots), len(slots), sum(len(s.cached) for s in slots),
                self.num_ctx * len(slots))
