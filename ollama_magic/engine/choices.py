"""Label probabilities: how likely the model finds each of a few given answers right after a prompt.

A classifier wants a probability per label, not a sampled word that may be none of them. Each label's
probability is that of its whole token sequence after the prompt (the sum of its tokens' log
probabilities, read from the logits, never sampled), normalised over the labels
(``ClassifyResponse.from_logprobs``). One choice job
(``GenerationJob.choices``) reads the prompt once, takes every label's first token from the prompt's
last row, and feeds each longer label's tokens as if generated (see the decoder), so a label's numbers
are the ones a generation of that label reports, and multi-token labels and labels that share their
first tokens are exact.

The label's tokens are tokenized on their own and appended to the prompt's (not tokenized together
with the prompt's end), so every label follows the same prompt tokens: the continuation a model
generates after a chat template's reply header, which ends at a token boundary.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Callable, Sequence

from ..errors import EngineError, InvalidRequest
from .jobs import Finished, GenerationJob
from .sampling import Sampling

#: labels scored per request: each is one job in the model's queue
MAX_CHOICES = 64


def check_choices(choices: Any) -> list[str]:
    """The labels as given, refused when they could not give a distribution (fewer than two, repeated,
    empty or too many)."""
    if isinstance(choices, str) or not isinstance(choices, Sequence):
        raise InvalidRequest("choices must be a list of labels, e.g. [\"positive\", \"negative\"]")
    labels = list(choices)
    if not all(isinstance(label, str) and label for label in labels):
        raise InvalidRequest("every choice must be a non-empty string")
    if not 2 <= len(labels) <= MAX_CHOICES:
        raise InvalidRequest(f"give between 2 and {MAX_CHOICES} choices, not {len(labels)}")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise InvalidRequest(f"choices must differ: {', '.join(map(repr, repeated))} given twice")
    return labels


def label_tokens(tokenize: Callable[[str], list[int]], labels: list[str], prompt: list[int],
                 num_ctx: int) -> list[list[int]]:
    """Each label's tokens, checked to fit after the prompt in the model's context."""
    tokens = [tokenize(label) for label in labels]
    empty = [label for label, toks in zip(labels, tokens) if not toks]
    if empty:
        raise InvalidRequest(f"the choice {empty[0]!r} has no tokens in this model's vocabulary")
    longest = max(len(toks) for toks in tokens)
    if len(prompt) + longest >= num_ctx:
        raise InvalidRequest(f"the prompt ({len(prompt)} tokens) and the longest choice ({longest}) do not fit "
                             f"the context (num_ctx {num_ctx}): shorten the prompt or raise num_ctx")
    return tokens


def score_labels(stream: Callable[[GenerationJob], Any], prompt: list[int], labels: list[list[int]],
                 cancel: threading.Event | None = None, *, lora: tuple[float, ...] | None = None) -> list[float]:
    """Each label's total log probability after ``prompt``, through the runner's ``stream``; ``cancel``
    (the request's: an HTTP client that went away) stops it at the decoder's next step."""
    if not prompt:
        raise InvalidRequest("the prompt is empty: give the text the choices answer")
    job = GenerationJob(tokens=prompt, sampling=Sampling(temperature=0), stop=[], num_predict=0, stream=False,
                        choices=tuple(tuple(toks) for toks in labels), cancel=cancel or threading.Event(), lora=lora)
    items = stream(job)
    try:
        finished = [item for item in items if isinstance(item, Finished)]
    finally:
        items.close()
    if not finished or [len(s) for s in finished[-1].scored] != [len(toks) for toks in labels]:
        raise EngineError("scoring the choices was stopped before every label was read")
    return [math.fsum(scored) for scored in finished[-1].scored]


__all__ = ["MAX_CHOICES", "check_choices", "label_tokens", "score_labels"]
