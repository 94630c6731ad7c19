"""The model-free parts of issue 17's notebook features: history bounds, code extraction, tool
schemas, variable summaries, LaTeX framing."""

from __future__ import annotations

import pandas as pd
import pytest

from ollama_magic.notebook.chat import last_exchanges
from IPython.core.formatters import DisplayFormatter

from IPython.core.interactiveshell import ExecutionInfo, ExecutionResult

from ollama_magic.notebook.cell_log import CellLog, RanCell
from ollama_magic.notebook.context import NotebookContext, SentWith, summarize
from ollama_magic.notebook.errorhelp import corrected_code, format_error
from ollama_magic.notebook.output_forms import as_latex, with_instruction
from ollama_magic.notebook.over import row_prompt
from ollama_magic.notebook.tools import ToolCall, required_call_format, tool_schemas

THREAD = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
    {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"},
    {"role": "user", "content": "q3"}, {"role": "assistant", "content": "a3"},
]


@pytest.mark.parametrize(("count", "kept"), [(0, []), (1, ["q3", "a3"]), (2, ["q2", "a2", "q3", "a3"]),
                                            (9, ["q1", "a1", "q2", "a2", "q3", "a3"])])
def test_last_exchanges_keeps_the_system_message_and_the_newest_exchanges(count: int, kept: list[str]) -> None:
    assert [m["content"] for m in last_exchanges(THREAD, count)] == ["be brief", *kept]


def test_corrected_code_prefers_the_last_python_block() -> None:
    answer = "Cause: typo.\n```text\nnot this\n```\nFix:\n```python\nimport math\nmath.sqrt(16)\n```\nDone."
    assert corrected_code(answer) == "import math\nmath.sqrt(16)"
    assert corrected_code("```\nx = 1\n```") == "x = 1"
    assert corrected_code("no code here") is None


def test_format_error_is_plain_text() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        text = format_error(exc)
    assert text.startswith("Traceback (most recent call last):") and text.endswith("KeyError: 'missing'")
    assert "\x1b[" not in text


def test_format_instructions_are_jupyter_ais() -> None:
    assert with_instruction("Plot it", "code") == \
        "Plot it\n\nProduce output as source code only, with no text or explanation before or after it."
    assert with_instruction("Hi", "markdown") == "Hi"
    assert as_latex("$$E = mc^2$$") == as_latex("\\[E = mc^2\\]") == as_latex("E = mc^2") == "$$\nE = mc^2\n$$"


def test_row_prompt_places_the_row() -> None:
    assert row_prompt("Summarize: {text}.", "a b") == "Summarize: a b."
    assert row_prompt("Summarize", "a b") == "Summarize\n\na b"
    assert row_prompt("{x} and {{y}}: {text}", "row") == "{x} and {{y}}: row"


def _area(width: float, height: float = 1.0) -> float:
    """Area of a rectangle.

    Args:
        width: the width in metres
        height: the height in metres
    """
    return width * height


def _shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


def test_tool_schema_comes_from_signature_hints_and_docstring() -> None:
    (schema,) = tool_schemas([_area])
    fn = schema["function"]
    assert fn["name"] == "_area" and fn["description"] == "Area of a rectangle."
    assert set(fn["parameters"]["properties"]) == {"width", "height"}
    assert fn["parameters"]["properties"]["width"] == {"type": "number", "description": "the width in metres"}
    forced = required_call_format([_area])
    assert forced["properties"]["name"] == {"const": "_area"} and forced["required"] == ["name", "arguments"]
    assert required_call_format([_area, _shout])["anyOf"][1]["properties"]["name"] == {"const": "_shout"}


def test_summaries_are_compact() -> None:
    frame = pd.DataFrame({"a": range(100), "b": ["x"] * 100})
    text = summarize("df", frame)
    assert text.startswith("df: DataFrame, 100 rows x 2 columns\n  dtypes: a: int64, b: str")
    assert text.count("\n") < 12
    long = summarize("s", "y" * 10_000)
    assert long.startswith("s: str of length 10000: 'yyy") and len(long) < 500
    assert summarize("d", {"k": 1}) == "d: dict of 1 items: {'k': 1}"


def test_sent_with_label_names_cells_and_vars() -> None:
    context = NotebookContext(cells=[(3, "[cell 3]"), (4, "[cell 4]")], variables=[("df", "df: ...")], tokens=12)
    assert context.label() == "sent with: cells 3-4; vars df (12 tokens)"
    assert context.wrap("hi").endswith("\n\nMessage:\nhi") and NotebookContext().wrap("hi") == "hi"


def test_sent_with_label_of_cells_run_without_history_names_no_numbers() -> None:
    assert NotebookContext(cells=[(None, "[cell]")], tokens=3).label() == "sent with: the last cell (3 tokens)"
    context = NotebookContext(cells=[(None, "[cell]"), (None, "[cell]")], variables=[("x", "x: int: 1")], tokens=9)
    assert context.label() == "sent with: the last 2 cells; vars x (9 tokens)"


def _ran(code: str, value: object = None, error: BaseException | None = None, number: int | None = None):  # noqa: ANN202
    result = ExecutionResult(ExecutionInfo(code, number is not None, False, True, None))
    result.execution_count, result.result, result.error_in_exec = number or 4, value, error  # IPython always counts
    return result


def test_the_cell_log_keeps_code_results_and_errors_of_cells_run_without_history() -> None:
    log = CellLog(shell=None, limit=3)
    for ran in (_ran("a = 1"), _ran("a + 1", 2), _ran("   ", 5), _ran("1 / 0", error=ZeroDivisionError("division by zero")),
                _ran("[a] * 2", [1, 1], number=7)):
        log.record(ran)  # what IPython's post_run_cell hands over, with or without history
    assert [c.code for c in log.cells] == ["a + 1", "1 / 0", "[a] * 2"]  # a blank cell is none; the oldest forgotten
    assert log.cells[0] == RanCell(None, "a + 1", "2", None) and log.cells[2] == RanCell(7, "[a] * 2", "[1, 1]", None)
    assert log.cells[1].output is None and log.cells[1].error.endswith("ZeroDivisionError: division by zero")
    assert log.last(2) == list(log.cells)[1:] and log.last(0) == []


def test_sent_with_is_collapsed_html_that_expands_to_the_text_sent() -> None:
    context = NotebookContext(cells=[(2, "[cell 2]\nx < 1")], tokens=5)
    data, _ = DisplayFormatter().format(SentWith(context))
    assert data["text/plain"] == "sent with: cell 2 (5 tokens)"
    assert data["text/html"] == ("<details><summary>sent with: cell 2 (5 tokens)</summary>"
                                 "<pre>Context from the notebook:\n\n[cell 2]\nx &lt; 1</pre></details>")


def test_a_tool_call_shows_collapsed() -> None:
    data, _ = DisplayFormatter().format(ToolCall("add", {"a": 2, "b": 3}, "5"))
    assert data["text/plain"] == "tool call: add(a=2, b=3) -> 5"
    assert data["text/html"] == "<details><summary>tool call: <code>add(a=2, b=3)</code></summary><pre>5</pre></details>"


class _ToolServer:
    """A backend that answers a forced call as a server whose template starts calls with ``<tool_call>``
    does: the format-constrained JSON comes back as content, with no parsed tool_calls."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    def chat(self, model: str, messages: list, **kwargs: object) -> object:
        import ollama

        self.requests.append(kwargs)
        content = '{"name": "_shout", "arguments": {"text": "hi"}}' if len(self.requests) == 1 else "HI it is."
        return ollama.ChatResponse(model=model, message=ollama.Message(role="assistant", content=content), done=True)


class _ToolEngine(_ToolServer):
    """A backend that takes ``tool_choice`` (the in-kernel Engine's signature)."""

    def chat(self, model: str, messages: list, *, tool_choice: object = None, **kwargs: object) -> object:  # type: ignore[override]
        return super().chat(model, messages, tool_choice=tool_choice, **kwargs)


def test_a_forced_call_is_the_engines_tool_choice_or_its_schema_read_back_as_a_call() -> None:
    from ollama_magic.notebook.tools import run_with_tools

    engine = _ToolEngine()
    run_with_tools(engine, "m", [{"role": "user", "content": "x"}], [_shout], tool_choice="required")
    assert engine.requests[0].get("tool_choice") == "required" and engine.requests[0].get("format") is None

    server = _ToolServer()
    final, calls = run_with_tools(server, "m", [{"role": "user", "content": "x"}], [_shout], tool_choice="required")
    assert server.requests[0]["format"] == required_call_format([_shout])
    assert [(c.name, c.arguments, c.result) for c in calls] == [("_shout", {"text": "hi"}, "HI")]
    assert final.message.content == "HI it is."
