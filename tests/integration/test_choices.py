"""Label probabilities on the real models (``Engine.classify``): read from the logits after one reading
of the prompt, and equal to the log probabilities a generation of the same label reports."""

from __future__ import annotations

import pytest

from ollama_magic import Engine
from ollama_magic.errors import InvalidRequest
from ollama_magic.store import ModelStore

pytestmark = pytest.mark.integration
MODELS = ["smollm2:135m", "gemma3:270m"]
# Certain by construction: every example answers "yes"
SHOTS = "".join(f"Question: is {w} a word? The answer is yes\n" for w in ["apple", "house", "river", "green", "table"])
PROMPT = SHOTS + "Question: is garden a word? The answer is"


def decoded(engine: Engine, model: str) -> int:
    return sum(s.tokens_decoded for s in engine.stats() if s.name == model and not s.embedding)


@pytest.mark.parametrize("model", MODELS)
def test_a_certain_answer_gets_almost_all_the_probability_and_the_prompt_is_read_once(
        registered: ModelStore, model: str) -> None:
    with Engine(registered) as engine:
        prompt_tokens = len(engine.tokenize(model, PROMPT).tokens)
        labels = [" yes", " no", " yes indeed"]
        result = engine.classify(model, PROMPT, choices=labels, raw=True)
        label_lengths = [len(engine.tokenize(model, label).tokens) for label in labels]
        assert result.label == " yes" and result.probabilities[" yes"] > 0.9
        assert list(result.probabilities) == labels and sum(result.probabilities.values()) == pytest.approx(1.0)
        assert result.logprobs[" yes indeed"] < result.logprobs[" yes"]  # one more token, less likely
        assert result.prompt_eval_count in (prompt_tokens, prompt_tokens + 1)  # with the model's BOS, if any
        # the prompt once; each label's first token from its last row; later tokens one by one
        assert decoded(engine, model) == result.prompt_eval_count + sum(n - 1 for n in label_lengths)


@pytest.mark.parametrize("model", MODELS)
def test_label_logprobs_equal_a_greedy_generations_alone(registered: ModelStore, model: str) -> None:
    with Engine(registered) as engine:  # each on a fresh cache: both read the whole prompt in one batch
        reply = engine.generate(model, PROMPT, raw=True, logprobs=True, top_logprobs=20,
                                options={"temperature": 0, "num_predict": 3, "stop": []})
    generated = [lp.token for lp in reply.logprobs]
    alternatives = {alt.token: alt.logprob for alt in reply.logprobs[0].top_logprobs}
    second = next(t for t in alternatives if t != generated[0])
    with Engine(registered) as engine:
        result = engine.classify(model, PROMPT, choices=["".join(generated), generated[0], second], raw=True)
    assert result.logprobs["".join(generated)] == pytest.approx(sum(lp.logprob for lp in reply.logprobs), abs=1e-4)
    assert result.logprobs[generated[0]] == pytest.approx(reply.logprobs[0].logprob, abs=1e-4)
    assert result.logprobs[second] == pytest.approx(alternatives[second], abs=1e-4)


def test_chat_messages_are_templated_and_bad_choices_are_refused(registered: ModelStore) -> None:
    with Engine(registered) as engine:
        result = engine.classify("smollm2:135m", messages=[{"role": "user", "content": "Is the sky blue? yes or no"}],
                                 choices=["yes", "no", "Yes", "No"])
        assert set(result.probabilities) == {"yes", "no", "Yes", "No"} and 0 < result.entropy < 1.3863  # < ln 4
        for bad, message in [(["yes"], "between 2"), (["a", "a"], "differ"), (["a", ""], "non-empty"),
                             ("yes,no", "list")]:
            with pytest.raises(InvalidRequest, match=message):
                engine.classify("smollm2:135m", "x", choices=bad)
        with pytest.raises(InvalidRequest, match="prompt or messages"):
            engine.classify("smollm2:135m", choices=["a", "b"])
        with pytest.raises(InvalidRequest, match="empty"):  # smollm2 adds no BOS: no token to read
            engine.classify("smollm2:135m", "", choices=["a", "b"], raw=True)
