"""``--choices``: the labels as written on the magic's line, the flags it refuses, the bars it shows, and
the DataFrame a column gives, against a scripted backend (no model)."""

from __future__ import annotations

import math
import threading
from typing import Any

import pandas as pd
import pytest

from ollama_magic.errors import CANNOT_SCORE_LABELS, InvalidRequest, NotSupported
from ollama_magic.notebook.arguments import leading_flags, split_line
from ollama_magic.notebook.choices import Classification, parse_labels
from ollama_magic.notebook.features import FEATURES
from ollama_magic.notebook.magics import chat_parser
from ollama_magic.notebook.over import chat_over
from ollama_magic.openai_backend import OpenAIBackend
from ollama_magic.types import ClassifyResponse


@pytest.mark.parametrize("text, labels", [
    ("positive,negative,neutral", ["positive", "negative", "neutral"]),
    ("yes, no ,maybe", ["yes", "no", "maybe"]),  # bare labels lose the spaces around them
    ('"yes, surely",no', ["yes, surely", "no"]),
    ("'very good',bad", ["very good", "bad"]),
    ('" yes"," no"', [" yes", " no"]),  # quoted: kept exactly, leading space included
    ("a,,b", ["a", "", "b"]),  # the empty label is the engine's to refuse, with its own message
])
def test_labels_are_split_at_commas_and_quotes_keep_commas_and_spaces(text: str, labels: list[str]) -> None:
    assert parse_labels(text) == labels


def parsed(line: str) -> tuple[Any, str]:
    parser = chat_parser()
    flags, message = leading_flags(line, parser)
    return parser.parse_args(split_line(flags)), message


def test_the_flag_on_the_magics_line_with_quoted_labels() -> None:
    args, message = parsed('--over df.text --choices "very good",bad,\'so so\' "Sentiment of: {text}"')
    assert args.choices == ["very good", "bad", "so so"] and args.over == "df.text"  # the shell's quotes: spaces
    assert message == '"Sentiment of: {text}"'
    args, message = parsed("--choices '\"yes, surely\",no' Is it?")  # a comma: quoted inside the shell's quotes
    assert args.choices == ["yes, surely", "no"] and message == "Is it?"


@pytest.mark.parametrize("flags, clash", [("--logprobs", "--logprobs"), ("--logprobs 3", "--logprobs"),
                                          ("-f json", "-f json"), ("--tools f", "--tools"), ("--think", "--think"),
                                          ("--dry-run", "--dry-run"), ("--image x.png", "--image")])
def test_choices_refuse_the_flags_of_a_generated_reply(flags: str, clash: str) -> None:
    args, _ = parsed(f"--choices a,b {flags} hi")
    with pytest.raises(InvalidRequest, match=f"cannot be combined with {clash}"):
        for feature in FEATURES:
            feature.check(args)


def test_choices_go_with_plain_cells_and_over() -> None:
    for line in ("--choices a,b hi", "-f text --choices a,b hi", "--over df.x --choices a,b hi {text}"):
        args, _ = parsed(line)
        assert args.choices == ["a", "b"]
        for feature in FEATURES:
            feature.check(args)


RESULT = dict(model="m", created_at="2026-01-01T00:00:00Z", label="yes", probabilities={"yes": 0.75, "no": 0.25},
              logprobs={"yes": math.log(0.75), "no": math.log(0.25)}, entropy=0.5623)


def test_a_classification_shows_bars_in_html_and_in_text() -> None:
    shown = Classification(**RESULT)
    html = shown._repr_html_()
    assert "width:120px" in html and "width:40px" in html  # 0.75 and 0.25 of 160 pixels
    assert "75.0%" in html and "25.0%" in html and "font-weight:bold\">yes<" in html
    lines = shown.bars().splitlines()
    assert lines[0] == "* yes  " + "█" * 15 + "·" * 5 + "   75.0%"
    assert lines[1] == "  no   " + "█" * 5 + "·" * 15 + "   25.0%"
    assert "entropy 0.562 nats" in lines[2]
    assert isinstance(shown, ClassifyResponse) and shown.probabilities == RESULT["probabilities"]


class ScriptedBackend:
    """Answers classify from the prompt's first word; "boom" fails as a dropped connection would."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def classify(self, model: str, prompt: str | None = None, *, choices: list[str], messages: Any = None,
                 **kwargs: Any) -> ClassifyResponse:
        text = messages[-1]["content"]
        with self.lock:
            self.asked.append(text)
        if "boom" in text:
            raise ConnectionError("connection reset by peer")
        good = "good" in text
        p = {choices[0]: 0.9 if good else 0.2, choices[1]: 0.1 if good else 0.8}
        return ClassifyResponse(model=model, created_at="", label=max(p, key=p.__getitem__), probabilities=p,
                                logprobs={k: math.log(v) for k, v in p.items()}, entropy=0.3)


def test_a_column_gives_label_p_and_entropy_columns_on_its_index_asking_each_text_once() -> None:
    backend = ScriptedBackend()
    column = pd.Series(["good film", "bad film", "good film", None, "boom"], index=["a", "b", "c", "d", "e"])
    frame = chat_over(column, "Sentiment of: {text}", model="m", backend=backend, choices="positive,negative",
                      progress=False)
    assert list(frame.columns) == ["label", "p_positive", "p_negative", "entropy", "error"]
    assert list(frame.index) == ["a", "b", "c", "d", "e"]
    assert list(frame.label[:3]) == ["positive", "negative", "positive"] and frame.p_positive["a"] == 0.9
    assert sorted(backend.asked) == ["Sentiment of: bad film", "Sentiment of: boom", "Sentiment of: good film"]
    assert pd.isna(frame.label["d"]) and pd.isna(frame.error["d"])  # a missing value is asked nothing
    assert "ConnectionError: connection reset by peer" in frame.error["e"] and pd.isna(frame.p_positive["e"])
    meta = frame.attrs["ollama_magic"]
    assert (meta["distinct"], meta["asked"], meta["failed"], meta["choices"]) == (3, 3, 1, ["positive", "negative"])


def test_a_server_that_cannot_score_labels_is_one_line_for_the_whole_column() -> None:
    backend = OpenAIBackend("http://127.0.0.1:9/v1")
    with pytest.raises(NotSupported) as caught:
        chat_over(["a", "b"], "{text}", model="m", backend=backend, choices=["x", "y"], progress=False)
    assert str(caught.value) == CANNOT_SCORE_LABELS.format(host="http://127.0.0.1:9/v1")
