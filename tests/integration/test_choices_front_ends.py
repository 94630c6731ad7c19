"""Label probabilities on every front end, on the real models: ``POST /api/classify`` on our server, the
Backend call behind it (and the one line a server without it gives), ``chat_over(..., choices=...)``
and ``%%chat --choices`` in a notebook shell."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.formatters import DisplayFormatter

from ollama_magic.backends import RemoteBackend
from ollama_magic.errors import CANNOT_SCORE_LABELS, NotSupported
from ollama_magic.notebook.choices import Classification
from ollama_magic.notebook.over import chat_over
from ollama_magic.openai_backend import OpenAIBackend
from ollama_magic.types import ClassifyResponse

from .conftest import OpenAIServer, engine_and_url_fixtures
from .test_choices import PROMPT
from .test_magics import GEMMA, chat, ip, models_root  # noqa: F401 - the magics' shell fixture

pytestmark = pytest.mark.integration
#: A request again, once its prompt is in the cache, gives the same numbers bit for bit. (Its first reading
#: reads the prompt's last rows in another batch shape, which moves a logprob by up to 0.05 on smollm2:
#: test_choices.py compares fresh caches.)
SAME = 1e-9
SMOL = "smollm2:135m"
engine, url = engine_and_url_fixtures("classify")
RICH = DisplayFormatter()  # every MIME type, as a kernel formats them


def test_api_classify_answers_what_the_engine_computes(url: str, engine: Any) -> None:
    body = {"model": SMOL, "prompt": PROMPT, "raw": True, "choices": [" yes", " no", " maybe"]}
    engine.classify(SMOL, PROMPT, raw=True, choices=body["choices"])  # the prompt in the cache (see SAME)
    answer = httpx.post(f"{url}/api/classify", json=body, timeout=300)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    got = ClassifyResponse.model_validate(answer.json())
    assert got.label == " yes" and got.probabilities[" yes"] > 0.9 and list(got.probabilities) == body["choices"]
    assert sum(got.probabilities.values()) == pytest.approx(1.0) and got.prompt_eval_count > 0
    direct = engine.classify(SMOL, PROMPT, raw=True, choices=body["choices"])
    for label in body["choices"]:
        assert got.logprobs[label] == pytest.approx(direct.logprobs[label], abs=SAME)
    chat = httpx.post(f"{url}/api/classify", timeout=300, json={
        "model": SMOL, "messages": [{"role": "user", "content": "Is fire hot? Answer yes or no."}],
        "choices": ["yes", "no"]}).json()
    assert set(chat["probabilities"]) == {"yes", "no"} and chat["label"] in ("yes", "no")


@pytest.mark.parametrize("body, status, words", [
    ({"model": SMOL, "prompt": "x"}, 400, "choices"),
    ({"model": SMOL, "prompt": "x", "choices": "yes,no"}, 400, "choices"),
    ({"model": SMOL, "prompt": "x", "choices": ["yes"]}, 400, "at least 2 items"),
    ({"model": SMOL, "prompt": "x", "choices": ["yes", ""]}, 400, "at least 1 character"),
    ({"model": SMOL, "prompt": "x", "choices": ["yes", "yes"]}, 400, "differ"),
    ({"model": SMOL, "choices": ["yes", "no"]}, 400, "prompt or messages"),
    ({"model": SMOL, "prompt": "x", "choices": [str(i) for i in range(65)]}, 400, "at most 64 items"),
    ({"model": SMOL, "prompt": "x", "choices": ["a", "b"], "options": {"num_ctx": 8}, "raw": True,
      "truncate": False}, 400, ""),
    ({"model": "no-such-model", "prompt": "x", "choices": ["a", "b"]}, 404, 'model "no-such-model" not found'),
])
def test_api_classify_refuses_a_bad_body_in_ollamas_error_shape(url: str, body: dict, status: int, words: str) -> None:
    if body.get("options"):  # a prompt longer than its context, with truncation off
        body["prompt"] = PROMPT
    answer = httpx.post(f"{url}/api/classify", json=body, timeout=300)
    assert answer.status_code == status and words in answer.json()["error"]


def test_api_classify_is_in_the_openapi_document(url: str) -> None:
    doc = httpx.get(f"{url}/openapi.json", timeout=30).json()
    route = doc["paths"]["/api/classify"]["post"]
    assert {"400", "404", "500"} <= set(route["responses"]) and "422" not in route["responses"]
    body = doc["components"]["schemas"]["ClassifyBody"]
    choices = body["properties"]["choices"]
    assert "choices" in body["required"] and (choices["minItems"], choices["maxItems"]) == (2, 64)


def test_remote_backend_classifies_through_our_server(url: str, engine: Any) -> None:
    remote = RemoteBackend(url)
    engine.classify(SMOL, PROMPT, raw=True, choices=[" yes", " no"])  # the prompt in the cache (see SAME)
    got = remote.classify(SMOL, PROMPT, raw=True, choices=[" yes", " no"])
    assert isinstance(got, ClassifyResponse) and got.label == " yes"
    assert got.logprobs[" yes"] == pytest.approx(engine.classify(SMOL, PROMPT, raw=True,
                                                                 choices=[" yes", " no"]).logprobs[" yes"], abs=SAME)
    with pytest.raises(Exception, match='model "nope" not found'):  # a missing model is still "not found"
        remote.classify("nope", "x", choices=["a", "b"])


def test_servers_without_the_route_say_so_in_one_line(llama_cpp_python_server: OpenAIServer) -> None:
    server = llama_cpp_python_server
    remote = RemoteBackend(server.url, api_key=server.api_key)  # POST /api/classify there: 404
    with pytest.raises(NotSupported) as caught:
        remote.classify("gemma3:270m", "Is it?", choices=["yes", "no"])
    assert str(caught.value) == CANNOT_SCORE_LABELS.format(host=server.url)
    openai = OpenAIBackend(f"{server.url}/v1", api_key=server.api_key)
    with pytest.raises(NotSupported) as caught:
        openai.classify("gemma3:270m", messages=[{"role": "user", "content": "Is it?"}], choices=["yes", "no"])
    assert str(caught.value) == CANNOT_SCORE_LABELS.format(host=f"{server.url}/v1") and "\n" not in str(caught.value)


class Counting:
    """The real engine, counting the classify calls (and failing one text as a dropped connection)."""

    def __init__(self, engine: Any, failing: str = "\x00") -> None:
        self.engine, self.failing, self.calls, self.lock = engine, failing, [], threading.Lock()

    def classify(self, model: str, prompt: str | None = None, **kwargs: Any) -> ClassifyResponse:
        text = kwargs["messages"][-1]["content"]
        with self.lock:
            self.calls.append(text)
        if self.failing in text:
            raise ConnectionError("connection reset by peer")
        return self.engine.classify(model, prompt, **kwargs)


def test_chat_over_with_choices_gives_a_probability_column_per_label(engine: Any) -> None:
    column = pd.Series(["I love this film, it is wonderful.", "Awful. I hated every minute.",
                        "I love this film, it is wonderful.", None, "BROKEN"], index=[10, 20, 30, 40, 50])
    backend = Counting(engine, failing="BROKEN")
    frame = chat_over(column, "Is this review positive or negative? {text}", model=SMOL, backend=backend,
                      choices=["positive", "negative"], progress=False)
    assert list(frame.columns) == ["label", "p_positive", "p_negative", "entropy", "error"]
    assert list(frame.index) == [10, 20, 30, 40, 50] and len(backend.calls) == 3  # the repeated review once
    answered = frame.loc[[10, 20, 30]]
    assert set(answered.label) <= {"positive", "negative"}
    assert (answered.p_positive + answered.p_negative).round(9).eq(1.0).all() and (answered.entropy > 0).all()
    assert answered.loc[10].equals(answered.loc[30])
    assert frame.label.isna()[[40, 50]].all() and "connection reset by peer" in frame.error[50]


# ---- the magic --------------------------------------------------------------------------------------

def test_a_choices_cell_shows_bars_and_keeps_the_distribution(ip) -> None:  # noqa: F811
    value = chat(ip, "--choices yes,no -o verdict", "Is the sun hot? Answer yes or no.")
    assert isinstance(value, Classification) and ip.user_ns["verdict"] is value
    assert list(value.probabilities) == ["yes", "no"] and value.model == GEMMA
    data, _ = RICH.format(value)
    assert data["text/html"].count("<tr>") == 2 and "px;background:" in data["text/html"]
    assert data["text/plain"].splitlines()[0].lstrip("* ").startswith("yes") and "█" in data["text/plain"]
    assert ip.run_line_magic("ollama", "threads").empty  # scoring labels enters no thread


def test_over_with_choices_in_the_magic(ip) -> None:  # noqa: F811
    ip.user_ns["df"] = pd.DataFrame({"text": ["Great!", "Terrible.", "Great!"]}, index=["a", "b", "c"])
    frame = chat(ip, '--over df.text --choices "very good",bad "Review: {text}. Was it good or bad?"')
    assert list(frame.columns) == ["label", "p_very good", "p_bad", "entropy"]
    assert list(frame.index) == ["a", "b", "c"] and frame.attrs["ollama_magic"]["asked"] == 2
    assert (frame["p_very good"] + frame.p_bad).round(9).eq(1.0).all()
    with pytest.raises(UsageError, match="--choices scores the labels and generates nothing: .* --logprobs"):
        chat(ip, "--choices a,b --logprobs", "hi")
    with pytest.raises(UsageError, match="between 2 and 64 choices"):
        chat(ip, "--choices a", "hi")
