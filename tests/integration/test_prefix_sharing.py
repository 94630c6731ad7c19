"""Rows behind one long instruction (``%chat --over``, or concurrent HTTP requests with one system
prompt) on the real models: the instruction is evaluated once and every other sequence starts from its
cells, and what each row gets from the shared cells is what it gets evaluating the prompt alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from ollama_magic import Engine
from ollama_magic.engine.decoder import Decoder
from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration
MODELS = ["smollm2:135m", "gemma3:270m"]
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
SYSTEM = "You label product reviews. " + " ".join(
    f"Example {i}: '{WORDS[i % 12]} {WORDS[i * 5 % 12]} works well' is positive." for i in range(30))
ROWS = [f"Review {i}: the {WORDS[i]} arrived broken and late." for i in range(4)]


def ask(engine: Engine, model: str, row: str) -> list[tuple[str, float]]:
    reply = engine.chat(model, [{"role": "system", "content": SYSTEM}, {"role": "user", "content": row}],
                        logprobs=True, options={"temperature": 0, "num_predict": 3, "stop": []})
    return [(lp.token, lp.logprob) for lp in reply.logprobs]


def decoded(engine: Engine, model: str) -> int:
    return sum(s.tokens_decoded for s in engine.stats() if s.name == model and not s.embedding)


@pytest.mark.parametrize("model", MODELS)
def test_four_rows_behind_one_instruction_read_it_once_and_score_as_alone(
        registered: ModelStore, model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    alone = []
    for row in ROWS:  # each on a fresh cache: the reference numbers
        with Engine(registered) as engine:
            alone.append(ask(engine, model, row))
            prompt_tokens = decoded(engine, model) - 2  # the 3rd token is sampled, never fed
    with Engine(registered) as engine:
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda row: ask(engine, model, row), ROWS))
        shared = decoded(engine, model)
        instruction = len(engine.tokenize(model, SYSTEM).tokens)
    assert instruction > 300
    # one reading of the instruction, then each row's own tokens (not 4 readings of it)
    assert shared < prompt_tokens * 4 - 2.5 * instruction
    for mine, reference in zip(together, alone):
        # The reply's first token is read from the prompt's cells alone. How a prompt is cut into batches
        # moves its log probability by up to 0.28 on this CPU, shared cells or not (measured on gemma3,
        # today's engine included); cells copied wrong would give another distribution altogether.
        assert mine[0][1] == pytest.approx(reference[0][1], abs=0.5)

    monkeypatch.setattr(Decoder, "share_prefixes", False)  # what the engine did before: a reading per slot
    with Engine(registered) as engine:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda row: ask(engine, model, row), ROWS))
        assert decoded(engine, model) > shared + 2.5 * instruction
