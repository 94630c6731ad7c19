"""Can a seeded sequence be batched and still give, bit for bit, the logits it gives alone?

A seeded request runs alone today (ollama_magic/engine/decoder.py) because llama.cpp's numbers for a
sequence change with its batch neighbours (bench/batch_exactness.py, docs/BENCHMARKS.md row 8). This
decodes one target sequence greedily for ``--steps`` tokens alone, then beside 3 other sequences that
start at other steps, with other prompt lengths, and that finish and are replaced while the target runs,
under several context settings and batch-building rules, and compares the target's logits rows bit for
bit. The same rule builds the batches of the alone run and of the batched one (a rule is a property of
the engine, not of the neighbours):

- ``unified``/``streams``: one KV pool for all sequences (``kv_unified``, today) or one stream each;
- ``fa``: flash attention ``auto`` (on, on a CPU: today) or ``off``;
- ``prompt``: ``whole`` (today: a new sequence's prompt in one chunk of the decode) or ``1`` (one
  prompt token per step, as a decoding sequence feeds);
- ``pad``: ``none`` (today) or ``slots``: every decode holds exactly one token per slot, idle slots
  feeding a throwaway token that is removed after the decode (a fixed batch width).

Cost: the wall time of the whole batched run (every decode, same tokens generated) and the median time
of one decode step once all 4 sequences decode, each relative to today's rule, medians over
``--rounds`` rounds (the rules interleaved) with their spread. Greedy on both embedded chat models, ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import llama_cpp
import numpy as np

from ollama_magic.engine.llama_context import ContextShape, LlamaContext

try:
    from _models import engine_with  # run as a script, as bench/__main__.py runs them
except ImportError:  # python -m bench.seeded_batching
    from bench._models import engine_with

MODELS = ("smollm2:135m", "gemma3:270m")
#: what a decode's cost is read from: wall time, or with ``--cpu-time`` this thread's CPU time (with
#: one thread llama.cpp computes on the calling thread, so a busy machine's waits are left out)
CLOCK = [time.perf_counter]
PARALLEL = 4


@dataclass(frozen=True)
class Rule:
    """How the context is made and how each step's batch is built (see the module docstring)."""

    name: str
    unified: bool = True
    flash_attn: str = "auto"
    prompt: str = "whole"  # "whole", "1" or "own"
    pad: bool = False
    ubatch: int = 0  # n_ubatch when set: at most this many tokens per micro-batch (0: n_batch, today)


RULES = (
    Rule("today (unified, fa auto)"),
    Rule("fa off", flash_attn="off"),
    Rule("streams", unified=False),
    Rule("streams, fa off", unified=False, flash_attn="off"),
    Rule("pad slots + prompt 1/step", prompt="1", pad=True),
    Rule("pad slots + prompt 1/step, fa off", flash_attn="off", prompt="1", pad=True),
    Rule("streams + pad + prompt 1/step", unified=False, prompt="1", pad=True),
    Rule("streams + pad + prompt 1/step, fa off", unified=False, flash_attn="off", prompt="1", pad=True),
    Rule("pad slots + prompt own decode", prompt="own", pad=True),
    Rule("streams + pad + prompt own decode", unified=False, prompt="own", pad=True),
    Rule("streams + pad + prompt own decode, fa off", unified=False, flash_attn="off", prompt="own", pad=True),
    Rule("streams, micro-batches of <= 3", unified=False, ubatch=3),
)


class RuleContext(LlamaContext):
    """Our context with its KV cache unified or split into one stream per sequence."""

    def __init__(self, path: Path, shape: ContextShape, unified: bool, ubatch: int = 0) -> None:
        self._unified = unified
        self._ubatch = ubatch
        super().__init__(path, shape)
        if ubatch:  # LlamaContext sizes its batch by n_ubatch (embeddings need it); a decode may hold n_batch
            llama_cpp.llama_batch_free(self.batch)
            self.n_batch = llama_cpp.llama_n_batch(self.ctx)
            self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)

    def context_params(self, shape: ContextShape) -> llama_cpp.llama_context_params:
        cparams = super().context_params(shape)
        cparams.kv_unified = self._unified
        if self._ubatch:
            cparams.n_ubatch = self._ubatch
        return cparams


@dataclass
class Seq:
    slot: int
    prompt: list[int]
    start: int  # the step it joins at
    n_gen: int
    pending: list[int]
    n_past: int = 0
    next_token: int | None = None
    generated: int = 0

    @classmethod
    def new(cls, slot: int, prompt: list[int], start: int, n_gen: int) -> Seq:
        return cls(slot, prompt, start, n_gen, list(prompt))


@dataclass
class Run:
    logits: list[np.ndarray]  # the target's rows, one per generated token
    tokens: list[int]
    decode_s: list[float]  # every llama_decode's wall time
    full_steps_s: list[float]  # decodes where all 4 slots fed one generated token


def run(lctx: RuleContext, rule: Rule, target: list[int], others: list[list[int]], steps: int, beside: bool) -> Run:
    """Decode the target (slot 0) for ``steps`` tokens, alone or beside others that come and go."""
    lctx.clear()
    tgt = Seq.new(1, target, 3 if beside else 0, steps)  # slot 1: its neighbours' ids are on both sides
    running: list[Seq] = []
    queue: list[Seq] = [tgt]
    if beside:  # neighbours with other prompt lengths, joining at other steps, replaced when they end
        queue += [Seq.new(0, others[0], 0, 40), Seq.new(2, others[1], 0, 100), Seq.new(3, others[2], 7, 60)]
    replacements = iter(others[3:] * 10)
    out = Run([], [], [], [])
    step = 0
    while tgt.generated < steps:
        for s in [s for s in queue if s.start <= step]:
            queue.remove(s)
            lctx.forget(s.slot, 0)
            running.append(s)
        running.sort(key=lambda s: s.slot)  # the engine's order: decoding tokens by slot, then prompt chunks
        if rule.prompt == "own":  # each new prompt in a llama_decode of its own, then one token per step
            for s in running:
                if s.next_token is None and s.pending:
                    take(lctx, out, s, tgt, [(t, k, s.slot, k == len(s.pending) - 1) for k, t in enumerate(s.pending)])
                    s.n_past, s.pending = len(s.prompt), []
            if tgt.generated >= steps:
                break
        entries, rows = [], []
        for s in running:
            if s.next_token is not None:
                rows.append((s, len(entries)))
                entries.append((s.next_token, s.n_past, s.slot, True))
        for s in running:
            if s.next_token is None and s.pending:
                chunk = s.pending if rule.prompt == "whole" else s.pending[:1]
                for k, t in enumerate(chunk):
                    last = len(chunk) == len(s.pending) and k == len(chunk) - 1
                    if last:
                        rows.append((s, len(entries)))
                    entries.append((t, s.n_past + k, s.slot, last))
        fed = {s.slot: sum(1 for e in entries if e[2] == s.slot) for s in running}
        padded: list[int] = []
        if rule.pad:  # one throwaway token in each idle slot, at that slot's next position
            busy = {s.slot for s in running}
            for slot in range(PARALLEL):
                if slot not in busy:
                    pos = llama_cpp.llama_memory_seq_pos_max(lctx.memory, slot) + 1
                    entries.append((target[0], pos, slot, False))
                    padded.append(slot)
            entries.sort(key=lambda e: e[2])  # one token per stream in seq id order: one micro-batch
        t0 = CLOCK[0]()
        code = lctx.decode(entries)
        out.decode_s.append(CLOCK[0]() - t0)
        assert code == 0, f"llama_decode returned {code}"
        if rule.pad:
            rows = [(s, next(i for i, e in enumerate(entries) if e[2] == s.slot and e[3])) for s, _ in rows]
            for slot in padded:
                pos = llama_cpp.llama_memory_seq_pos_max(lctx.memory, slot)
                assert lctx.forget(slot, pos)
        if len(entries) == PARALLEL and all(s.next_token is not None for s in running) and len(running) == PARALLEL:
            out.full_steps_s.append(out.decode_s[-1])
        for s in running:
            n = fed.get(s.slot, 0)
            if s.next_token is not None:
                s.next_token = None
            else:
                s.pending = s.pending[n:]
            s.n_past += n
        for s, row in rows:
            pick(lctx, out, s, tgt, row)
            if s.generated >= s.n_gen:
                running.remove(s)
                if s is not tgt:
                    queue.append(Seq.new(s.slot, next(replacements), step + 1, s.n_gen))
        step += 1
    return out


def take(lctx: RuleContext, out: Run, s: Seq, tgt: Seq, entries: list[tuple[int, int, int, bool]]) -> None:
    """Decode one sequence's prompt alone and pick its first token."""
    t0 = CLOCK[0]()
    assert lctx.decode(entries) == 0
    out.decode_s.append(CLOCK[0]() - t0)
    pick(lctx, out, s, tgt, len(entries) - 1)


def pick(lctx: RuleContext, out: Run, s: Seq, tgt: Seq, row: int) -> None:
    """The greedy token of batch row ``row`` becomes ``s``'s next; the target's logits row is kept."""
    logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(lctx.ctx, row), shape=(lctx.n_vocab,))
    token = int(np.argmax(logits))
    if s is tgt:
        out.logits.append(logits.copy())
        out.tokens.append(token)
    s.generated += 1
    s.next_token = token


def compare(alone: Run, beside: Run) -> tuple[bool, int | None, float]:
    """(all rows bit-identical, first differing step, max |diff| over the rows before tokens diverge)."""
    first = next((i for i, (a, b) in enumerate(zip(alone.logits, beside.logits)) if not np.array_equal(a, b)), None)
    diverge = next((i for i, (a, b) in enumerate(zip(alone.tokens, beside.tokens)) if a != b), len(alone.tokens))
    rows = list(zip(alone.logits, beside.logits))[: diverge + 1]
    max_diff = max(float(np.max(np.abs(a - b))) for a, b in rows)
    return first is None, first, max_diff


PROMPTS = ("Tell me a story about a lighthouse keeper and the storm that changed everything.",  # the target
           "Hi.",
           ("Describe, in great detail and with many examples, the history of the city of Lyon, its bridges, "
            "its silk workers, its food and its two rivers."),
           "List ten prime numbers and explain why each is prime.",
           "Write a haiku about autumn.",
           "Explain how a refrigerator works, step by step, for a curious ten year old child.")


@dataclass
class Result:
    """One rule on one model: the first round's comparison, and every round's times."""

    identical: bool = False
    first: int | None = None
    max_diff: float = 0.0
    tokens_same: bool = False
    repeatable: bool = True
    first_beside: Run | None = None
    alone_s: list[float] = field(default_factory=list)  # the target alone: every decode, summed
    run_s: list[float] = field(default_factory=list)  # the batched run: every decode, summed
    step_s: list[float] = field(default_factory=list)  # the batched run: median 4-sequence step


def measure_round(path: Path, rule: Rule, steps: int, threads: int, result: Result) -> None:
    """One load of the model under ``rule``: the target alone, then beside its neighbours."""
    shape = ContextShape(num_ctx=512, parallel=PARALLEL, num_batch=512, threads=threads, num_gpu=0,
                         use_mmap=True, flash_attn=rule.flash_attn)
    lctx = RuleContext(path, shape, rule.unified, rule.ubatch)
    try:
        target, *others = [lctx.tokenize(p.encode(), add_bos=True) for p in PROMPTS]
        alone = run(lctx, rule, target, others, steps, beside=False)
        beside = run(lctx, rule, target, others, steps, beside=True)
    finally:
        lctx.close()
    if result.first_beside is None:
        result.identical, result.first, result.max_diff = compare(alone, beside)
        result.tokens_same = alone.tokens == beside.tokens
        result.first_beside = beside
    else:
        result.repeatable &= compare(result.first_beside, beside)[0]
    result.alone_s.append(sum(alone.decode_s))
    result.run_s.append(sum(beside.decode_s))
    result.step_s.append(statistics.median(beside.full_steps_s) if beside.full_steps_s else float("nan"))


def spread(values: list[float]) -> str:
    return f"{statistics.median(values) * 1e3:.0f} ({min(values) * 1e3:.0f}-{max(values) * 1e3:.0f})"


def table(model: str, rules: list[Rule], results: list[Result]) -> None:
    base = results[0]
    print(f"\n{model}: times in ms, median (min-max) over rounds; ratios against the first rule's medians")
    print(f"{'rule':42} {'identical':9} {'1st diff':8} {'max|diff|':9} {'tokens':6} {'repeat':6} "
          f"{'batched run':18} {'ratio':5} {'4-seq step':14} {'ratio':5} {'alone run':18} {'ratio':5}")
    for rule, r in zip(rules, results):
        ratio = {k: statistics.median(getattr(r, k)) / statistics.median(getattr(base, k))
                 for k in ("run_s", "step_s", "alone_s")}
        print(f"{rule.name:42} {'yes' if r.identical else 'no':9} {'-' if r.first is None else r.first:<8} "
              f"{r.max_diff:<9.3g} {'same' if r.tokens_same else 'differ':6} {'yes' if r.repeatable else 'no':6} "
              f"{spread(r.run_s):18} {ratio['run_s']:<5.2f} {spread(r.step_s):14} {ratio['step_s']:<5.2f} "
              f"{spread(r.alone_s):18} {ratio['alone_s']:<5.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="rounds over every rule (times interleave)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--cpu-time", action="store_true",
                        help="cost as the decoding thread's CPU time (use with --threads 1 on a loaded machine)")
    parser.add_argument("--partial", action="store_true", help="print the table after every round too")
    parser.add_argument("--rules", default="", help="comma-separated rule numbers (1-based); default all")
    args = parser.parse_args()
    if args.cpu_time:
        if args.threads != 1:
            parser.error("--cpu-time counts the calling thread only: use it with --threads 1")
        CLOCK[0] = time.thread_time
    rules = [RULES[int(i) - 1] for i in args.rules.split(",")] if args.rules else list(RULES)
    models = args.models.split(",")
    print(f"{args.steps} greedy steps, {args.threads} threads, {args.rounds} rounds, "
          f"{'CPU' if args.cpu_time else 'wall'} time", flush=True)
    with engine_with(*models) as engine:
        paths = {model: engine.store.resolve(model).model_path for model in models}
        results = {model: [Result() for _ in rules] for model in models}
        for i in range(args.rounds):  # rounds outermost: round 1 alone gives every identity answer
            for model in models:
                print(f"{model} round {i + 1}: load {os.getloadavg()[0]:.2f}", flush=True)
                for rule, result in zip(rules, results[model]):
                    measure_round(paths[model], rule, args.steps, args.threads, result)
                if i < args.rounds - 1 and args.partial:
                    table(f"{model} (after round {i + 1})", rules, results[model])
        for model in models:
            table(model, rules, results[model])
    print(f"\nload after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
