"""The batching decoder's step loop without a model: a fake context and fake sampler chains, so that
admission, slot choice, batch bounds, cancellation and failure isolation run in milliseconds (the
integration tests on real models cover the same loop with llama.cpp)."""

from __future__ import annotations

import queue
from typing import Any

from ollama_magic.engine.decoder import Decoder
from ollama_magic.engine.jobs import EngineError, Finished, GenerationJob, Token
from ollama_magic.engine.llama_context import ContextShape
from ollama_magic.engine.sampling import Sampling

EOG = 99


class FakeContext:
    """What the decoder uses of a LlamaContext: one byte per token, ``EOG`` ends a sequence."""

    def __init__(self, parallel: int = 2, n_batch: int = 8, num_ctx: int = 64) -> None:
        self.shape = ContextShape(num_ctx=num_ctx, parallel=parallel, num_batch=n_batch, threads=1, num_gpu=0,
                                  use_mmap=True)
        self.n_batch = n_batch
        self.vocab, self.n_vocab, self.ctx = None, 100, object()
        self.batches: list[list[tuple[int, int, int, bool]]] = []  # every decode's entries
        self.forgotten: list[tuple[int, int]] = []
        self.shared: list[tuple[int, int, int]] = []  # every share(source, target, count)
        self.kv_slots: int | None = None  # decode answers 1 ("no KV slot") above this many entries
        self.adapters: tuple[object, ...] = ()  # LoRA adapters (tests set two)
        self.lora: tuple[float, ...] = ()
        self.lora_sets: list[tuple[float, ...]] = []  # every change of scales (set_lora, as LlamaContext's)

    def decode(self, entries: list[tuple[int, int, int, bool]]) -> int:
        if len(entries) > self.n_batch:
            raise AssertionError(f"{len(entries)} entries in a batch of {self.n_batch}")
        if self.kv_slots is not None and len(entries) > self.kv_slots:
            return 1
        self.batches.append(list(entries))
        return 0

    def forget(self, seq: int, start: int = 0) -> bool:
        self.forgotten.append((seq, start))
        return True

    def reusable(self, seq: int, count: int) -> bool:
        return True

    def share(self, source: int, target: int, count: int) -> None:
        self.shared.append((source, target, count))

    def logprob(self, row: int, token: int) -> float:
        """-(the batch row + the token / 100): which row a score was read from shows in its value."""
        return -(row + token / 100)

    def logprobs(self, row: int, tokens: list[int]) -> list[float]:
        return [self.logprob(row, token) for token in tokens]

    def piece(self, token: int, special: bool = False) -> bytes:
        return bytes([ord("a") + token % 26])

    def is_eog(self, token: int) -> bool:
        return token == EOG

    def clear(self) -> None:
        pass

    def set_lora(self, scales: tuple[float, ...]) -> None:
        if scales != self.lora:
            self.lora_sets.append(scales)
            self.lora = scales

    def shift(self, seq: int, keep: int, discard: int, n_past: int) -> bool:
        return False


class FakeSampler:
    """Samples 1, 2, 3, ...; a job whose grammar is "boom" fails at its first sample, one whose grammar
    is "eog" samples the end of generation third."""

    deferred = False

    def __init__(self, vocab: Any, n_vocab: int, n_ctx: int, sampling: Sampling, grammar: str | None,
                 *, deferred: bool = False) -> None:
        self.grammar = grammar
        self.count = 0
        self.closed = False

    def sample(self, ctx: Any, row: int) -> int:
        if self.grammar == "boom":
            raise RuntimeError("the sampler broke")
        self.count += 1
        if self.grammar == "eog" and self.count == 3:
            return EOG
        return self.count

    def close(self) -> None:
        self.closed = True


def job(tokens: list[int], n: int = 4, **kwargs: Any) -> GenerationJob:
    return GenerationJob(tokens=tokens, sampling=Sampling(temperature=0), stop=[], num_predict=n, **kwargs)


def run(decoder: Decoder, *jobs: GenerationJob, steps: int = 200) -> None:
    for j in jobs:
        decoder.submit(j, j.output)
    for _ in range(steps):
        if not decoder.busy():
            return
        decoder.step()
    raise AssertionError("the decoder did not finish its jobs")


def results(j: GenerationJob) -> tuple[str, Finished | BaseException]:
    text, items = "", []
    while True:
        try:
            items.append(j.output.get_nowait())
        except queue.Empty:
            break
    text = "".join(i.text for i in items if isinstance(i, Token))
    return text, items[-1]


def make(lctx: FakeContext) -> Decoder:
    return Decoder(lctx, lambda: None, sampler_factory=FakeSampler)  # type: ignore[arg-type]


def test_three_streams_on_a_batch_of_two_all_finish_within_the_bound() -> None:
    lctx = FakeContext(parallel=3, n_batch=2)
    jobs = [job([10 + i, 20, 30], n=5) for i in range(3)]
    run(make(lctx), *jobs)
    assert max(len(b) for b in lctx.batches) <= 2
    for j in jobs:
        text, fin = results(j)
        assert isinstance(fin, Finished) and fin.eval_count == 5 and text == "bcdef"


def test_prefill_shares_the_batch_and_never_exceeds_it() -> None:
    lctx = FakeContext(parallel=2, n_batch=4)
    a, b = job(list(range(1, 11)), n=3), job(list(range(30, 39)), n=3)
    run(make(lctx), a, b)
    assert max(len(batch) for batch in lctx.batches) <= 4
    assert sum(len(batch) for batch in lctx.batches) == 10 + 9 + 2 * 2  # prompts, then 2 fed-back tokens each
    assert all(isinstance(results(j)[1], Finished) for j in (a, b))


def test_one_failing_sequence_fails_alone() -> None:
    lctx = FakeContext(parallel=2)
    bad, good = job([1, 2, 3], grammar="boom"), job([4, 5, 6], n=4)
    decoder = make(lctx)
    run(decoder, bad, good)
    _, error = results(bad)
    assert isinstance(error, EngineError) and "the sampler broke" in str(error)
    text, fin = results(good)
    assert isinstance(fin, Finished) and fin.eval_count == 4 and text == "bcde"
    bad_slot = lctx.batches[0][0][2]
    assert (bad_slot, 0) in lctx.forgotten  # its cells are dropped: the slot's cache is not trusted
    assert not decoder.busy()


def test_no_kv_slot_retries_with_half_the_batch() -> None:
    lctx = FakeContext(parallel=2, n_batch=8)
    lctx.kv_slots = 3
    a, b = job(list(range(1, 7)), n=3), job(list(range(20, 26)), n=3)
    run(make(lctx), a, b)
    assert all(isinstance(results(j)[1], Finished) for j in (a, b))
    assert max(len(batch) for batch in lctx.batches) <= 3


def test_no_kv_slot_even_for_one_token_fails_the_running_jobs() -> None:
    lctx = FakeContext(parallel=1, n_batch=8)
    lctx.kv_slots = 0
    a = job([1, 2, 3])
    run(make(lctx), a)
    assert isinstance(results(a)[1], EngineError)


def test_a_job_cancelled_while_queued_ends_cancelled_without_decoding() -> None:
    lctx = FakeContext(parallel=1)
    running, queued = job([1, 2], n=6), job([70, 71], n=6)
    decoder = make(lctx)
    decoder.submit(running, running.output)
    decoder.step()
    decoder.submit(queued, queued.output)
    queued.cancel.set()
    run(decoder)
    assert isinstance(results(running)[1], Finished)
    text, fin = results(queued)
    assert text == "" and isinstance(fin, Finished) and fin.done_reason == "cancelled"
    assert all(entry[0] not in (70, 71) for batch in lctx.batches for entry in batch)


def test_a_new_job_goes_to_the_slot_that_caches_its_prefix_and_evaluates_only_the_rest() -> None:
    lctx = FakeContext(parallel=2)
    decoder = make(lctx)
    first, other = job([1, 2, 3, 4, 5], n=1), job([40, 41, 42], n=1)
    run(decoder, first, other)
    first_slot = lctx.batches[0][0][2]
    lctx.batches.clear()
    follow = job([1, 2, 3, 4, 5, 6, 7], n=1)
    run(decoder, follow)
    fed = [entry for batch in lctx.batches for entry in batch]
    assert {entry[2] for entry in fed} == {first_slot}
    assert [entry[0] for entry in fed] == [6, 7]  # 1..5 were already in that slot's cells


def test_num_predict_zero_finishes_at_admission() -> None:
    lctx = FakeContext(parallel=1)
    a = job([1, 2, 3], n=0)
    run(make(lctx), a)
    text, fin = results(a)
    assert text == "" and isinstance(fin, Finished) and fin.done_reason == "length"


def test_end_of_generation_finishes_with_stop_and_keeps_its_text() -> None:
    lctx = FakeContext(parallel=1)
    a = job([1, 2], n=10, grammar="eog")
    run(make(lctx), a)
    text, fin = results(a)
    assert text == "bc" and isinstance(fin, Finished) and fin.done_reason == "stop" and fin.eval_count == 2


def test_a_seeded_job_waits_for_the_running_ones_runs_alone_and_nothing_passes_it() -> None:
    lctx = FakeContext(parallel=3)
    decoder = make(lctx)
    running = job([1, 2], n=4)
    decoder.submit(running, running.output)
    decoder.step()
    seeded = GenerationJob(tokens=[50, 51], sampling=Sampling(temperature=0, seed=7), stop=[], num_predict=2)
    later = job([60, 61], n=2)
    run(decoder, seeded, later)
    slots_of = [{entry[0] for entry in batch} for batch in lctx.batches]
    first_seeded = next(i for i, tokens in enumerate(slots_of) if 50 in tokens)
    first_later = next(i for i, tokens in enumerate(slots_of) if 60 in tokens)
    assert all(len({e[2] for e in batch}) == 1 for batch in lctx.batches[first_seeded:first_later])  # alone
    assert first_later > first_seeded
    assert all(isinstance(results(j)[1], Finished) for j in (running, seeded, later))


def test_every_queued_job_leaves_the_queue_once_and_fail_all_ends_them_all() -> None:
    lctx = FakeContext(parallel=1)
    left: list[int] = []
    decoder = Decoder(lctx, lambda: left.append(1), sampler_factory=FakeSampler)  # type: ignore[arg-type]
    jobs = [job([i + 1, i + 2], n=50) for i in range(3)]
    for j in jobs:
        decoder.submit(j, j.output)
    decoder.step()
    assert len(left) == 1  # one admitted, two waiting
    decoder.fail_all(EngineError("unloaded"))
    assert len(left) == 3 and not decoder.busy()
    assert all(isinstance(results(j)[1], EngineError) for j in jobs)


def test_a_steps_tokens_reach_their_outputs_when_the_step_ends() -> None:
    """No consumer is woken while the step still samples the other sequences (its thread would take
    the GIL between two decodes, at the decoder's next C call): every output gets its item at the end."""
    jobs = [job([10], n=3), job([20], n=3)]
    seen: list[int] = []

    class Watching(FakeSampler):
        def sample(self, ctx: Any, row: int) -> int:
            seen.append(sum(j.output.qsize() for j in jobs))
            return super().sample(ctx, row)

    decoder = Decoder(FakeContext(parallel=2), lambda: None, sampler_factory=Watching)  # type: ignore[arg-type]
    for j in jobs:
        decoder.submit(j, j.output)
    decoder.step()
    assert seen == [0, 0]
    assert [j.output.qsize() for j in jobs] == [1, 1]
    run(decoder)
    assert [results(j)[0] for j in jobs] == ["bcd", "bcd"]


# ---- shared prefixes and scoring ---------------------------------------------------------------

PREFIX = list(range(1, 41))  # 40 tokens: more than MIN_SHARED_PREFIX


def test_rows_behind_one_long_prefix_evaluate_it_once_not_once_per_slot() -> None:
    lctx = FakeContext(parallel=4, n_batch=16, num_ctx=128)
    rows = [job(PREFIX + [50 + i, 60 + i], n=2) for i in range(4)]
    run(make(lctx), *rows)
    fed = [(token, pos) for batch in lctx.batches for token, pos, _seq, _ in batch if pos < len(PREFIX)]
    assert sorted(fed) == sorted((t, p) for p, t in enumerate(PREFIX))  # each prefix position fed once
    assert [(src, count) for src, _dst, count in lctx.shared] == [(0, 40)] * 3
    for j in rows:
        fin = results(j)[1]
        assert isinstance(fin, Finished) and fin.prompt_eval_count == 42


def test_a_short_common_prefix_is_not_waited_for() -> None:
    lctx = FakeContext(parallel=2, n_batch=4, num_ctx=64)
    a, b = job([1, 2, 3, 4, 5, 6, 7, 8], n=1), job([1, 2, 3, 9, 9, 9], n=1)
    run(make(lctx), a, b)
    assert {seq for _t, _p, seq, _ in lctx.batches[0]} == {0, 1}  # both read in the first step
    assert lctx.shared == []


def test_a_choice_job_reads_every_first_token_at_the_prompt_end_and_feeds_longer_labels() -> None:
    lctx = FakeContext(parallel=1, n_batch=8, num_ctx=64)
    scored = job([5, 6, 7], n=0, choices=((8,), (9, 10, 11), (12, 13)))
    run(make(lctx), scored)
    text, fin = results(scored)
    assert text == "" and isinstance(fin, Finished) and fin.eval_count == 0
    # the prompt, then label 2's tokens one per step, then label 3's from the prompt's end again
    assert [[(t, p) for t, p, _s, _w in batch] for batch in lctx.batches] == [
        [(5, 0), (6, 1), (7, 2)], [(9, 3)], [(10, 4)], [(12, 3)]]
    assert (0, 3) in lctx.forgotten  # label 2's cells went before label 3 started
    # FakeContext.logprob is -(row + token / 100): the prompt's row is 2, every later step's row 0
    assert fin.scored == [[-2.08], [-2.09, -0.10, -0.11], [-2.12, -0.13]]


def test_labels_after_a_long_prompt_read_it_once() -> None:
    lctx = FakeContext(parallel=2, n_batch=64, num_ctx=128)
    first = job(PREFIX, n=0, choices=((70,), (71, 72)))
    second = job(PREFIX + [41], n=0, choices=((70,), (73,)))
    run(make(lctx), first, second)
    assert sum(len(batch) for batch in lctx.batches) == 40 + 1 + 1  # the prompt, label 2's second token, token 41
    assert [len(scored) for scored in results(first)[1].scored] == [1, 2]
    assert [len(scored) for scored in results(second)[1].scored] == [1, 1]


def test_a_choice_job_whose_labels_do_not_fit_is_refused() -> None:
    lctx = FakeContext(parallel=1, num_ctx=8)
    bad = job([5, 6, 7, 8, 9, 10], choices=((1, 2, 3),))
    run(make(lctx), bad)
    assert isinstance(results(bad)[1], EngineError)


def test_a_choice_job_with_an_empty_prompt_fails_instead_of_holding_its_slot() -> None:
    lctx = FakeContext(parallel=1)
    empty, after = job([], choices=((1,), (2,))), job([4, 5], n=2)
    run(make(lctx), empty, after)
    assert isinstance(results(empty)[1], EngineError)
    assert isinstance(results(after)[1], Finished)  # the slot is free for the next job


class LoraContext(FakeContext):
    """A fake with two LoRA adapters that records the scales every decode ran under."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.adapters = (object(), object())
        self.lora = (1.0, 1.0)
        self.scales_of_batches: list[tuple[float, ...]] = []

    def decode(self, entries: list[tuple[int, int, int, bool]]) -> int:
        self.scales_of_batches.append(self.lora)
        return super().decode(entries)


def test_jobs_of_different_lora_scales_never_share_a_decode_and_scales_change_only_between_runs() -> None:
    lctx = LoraContext(parallel=4, n_batch=16)
    plain, halved, plain_too = job([1, 2, 3], n=3), job([4, 5, 6], n=3, lora=(0.5, 0.0)), job([7, 8], n=3)
    run(make(lctx), plain, halved, plain_too)
    seqs_by_scales: dict[tuple[float, ...], set[int]] = {}
    for scales, batch in zip(lctx.scales_of_batches, lctx.batches):
        seqs_by_scales.setdefault(scales, set()).update(entry[2] for entry in batch)
    assert len(seqs_by_scales) == 2 and not set.intersection(*seqs_by_scales.values())
    assert {lctx.batches[0][0][0], lctx.batches[0][-1][0]} == {1, 8}  # the two at (1, 1) went together
    assert lctx.lora_sets == [(0.5, 0.0)]  # one change: the default ran first, the other after it
    assert all(isinstance(results(j)[1], Finished) for j in (plain, halved, plain_too))


def test_a_slot_cached_under_other_lora_scales_is_evaluated_again_not_reused() -> None:
    lctx = LoraContext(parallel=1)
    decoder = make(lctx)
    run(decoder, job([1, 2, 3, 4, 5], n=1))
    lctx.batches.clear()
    run(decoder, job([1, 2, 3, 4, 5, 6], n=1, lora=(0.0, 0.0)))
    assert [entry[0] for entry in lctx.batches[0]] == [1, 2, 3, 4, 5, 6]  # nothing reused
    lctx.batches.clear()
    run(decoder, job([1, 2, 3, 4, 5, 6, 7], n=1, lora=(0.0, 0.0)))
    assert [entry[0] for entry in lctx.batches[0]][:1] == [7]  # same scales: the cached prefix serves


def test_a_job_with_the_wrong_number_of_lora_scales_fails_alone() -> None:
    lctx = LoraContext(parallel=2)
    bad, good = job([1, 2], n=1, lora=(1.0,)), job([3, 4], n=1)
    run(make(lctx), bad, good)
    assert isinstance(results(bad)[1], EngineError) and isinstance(results(good)[1], Finished)
