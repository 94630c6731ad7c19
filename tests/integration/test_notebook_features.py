"""Error help, output forms, prompts over a column, notebook context and tools, through a real
IPython shell on the real models (issue 17)."""

from __future__ import annotations

import _thread
import builtins
import json
import threading
import time

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.formatters import DisplayFormatter
from IPython.utils.capture import capture_output

from ollama_magic.notebook.display import ChatReply, strip_fence
from ollama_magic.notebook.output_forms import FORMAT_INSTRUCTIONS
from ollama_magic.notebook.over import RowError, chat_over
from tests.integration.test_magics import GEMMA, SHORT, chat, history, ip, models_root  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration
RICH = DisplayFormatter()  # every MIME type, as a kernel formats them (a terminal shell keeps text/plain only)

TOOLS_TEMPLATE = """{{- if .Tools }}<start_of_turn>user
You can call these tools. To call one, answer with only {"name": ..., "arguments": {...}}.
{{ range .Tools }}{{ . }}
{{ end }}<end_of_turn>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "user" }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ else if eq .Role "assistant" }}<start_of_turn>model
{{ if .ToolCalls }}{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}{{ end }}{{ else }}{{ .Content }}{{ end }}<end_of_turn>
{{ else if eq .Role "tool" }}<start_of_turn>user
Result of the tool call: {{ .Content }}<end_of_turn>
{{ end }}
{{- end }}<start_of_turn>model
"""


def run(ip, code: str):  # noqa: ANN001, ANN201
    return ip.run_cell(code, store_history=True)


# ---- error help -------------------------------------------------------------------------------------

def test_errors_are_kept_uncoloured_as_err_n(ip) -> None:
    failed = run(ip, "def half(x):\n    return x / 0\nhalf(3)")
    n = failed.execution_count
    text = ip.user_ns["Err"][n]
    assert text.startswith("Traceback (most recent call last):")
    assert text.rstrip().endswith("ZeroDivisionError: division by zero")
    assert "return x / 0" in text and "\x1b[" not in text and "interactiveshell.py" not in text
    syntax = run(ip, "x = (")
    assert "SyntaxError" in ip.user_ns["Err"][syntax.execution_count]
    assert run(ip, "1 + 1").execution_count not in ip.user_ns["Err"]


def test_err_in_out_interpolate_into_the_message(ip) -> None:
    bad = run(ip, "int('seven')").execution_count
    good = run(ip, "6 * 7").execution_count
    chat(ip, f"-t why {SHORT}", f"Cell {{In[{bad}]}} failed with:\n{{Err[{bad}]}}\nCell {good} gave {{Out[{good}]}}.")
    sent = history(ip, "why").content[0]
    assert f"Cell int('seven') failed with:\nTraceback" in sent
    assert "ValueError: invalid literal for int() with base 10: 'seven'" in sent and sent.endswith("gave 42.")
    with pytest.raises(UsageError, match=r"Err\[999\]: cell 999 raised no error"):
        chat(ip, SHORT, "{Err[999]}")


def test_fix_sends_the_failing_cell_and_inserts_a_corrected_cell(ip) -> None:
    run(ip, "values = [1, 2, 3]\ntotal = sum(values) / len(value)")
    last = run(ip, "import math\nmath.sqroot(16)").execution_count
    ip.rl_next_input = None
    with capture_output() as cap:
        reply = ip.run_line_magic("ollama", "fix --seed 3 --temperature 0 --num-predict 120")
    assert isinstance(reply, ChatReply) and reply
    sent = history(ip, "fix").content[0]  # the last error by default, code and traceback both
    assert "math.sqroot(16)" in sent and "AttributeError: module 'math' has no attribute 'sqroot'" in sent
    assert f"cell {last}" in sent
    if "```" in str(reply):  # the model wrote a code block: it becomes the next cell
        assert ip.rl_next_input and ip.rl_next_input in str(reply)
        assert f"corrected cell {last} is in a new cell below" in cap.stderr
    else:
        assert ip.rl_next_input is None and "no code block" in cap.stderr
    with pytest.raises(UsageError, match="cell 1000 raised no error"):
        ip.run_line_magic("ollama", "fix 1000")


def test_fix_of_a_named_cell_starts_the_fix_thread_afresh(ip) -> None:
    first = run(ip, "undefined_name + 1").execution_count
    run(ip, "[][0]")
    ip.run_line_magic("ollama", f"fix {first} --seed 1 --num-predict 8")
    ip.run_line_magic("ollama", f"fix {first} --seed 1 --num-predict 8")
    fix = history(ip, "fix")
    assert len(fix) == 2 and "NameError: name 'undefined_name' is not defined" in fix.content[0]


# ---- output forms -----------------------------------------------------------------------------------

def test_format_code_puts_the_code_in_a_new_cell_below(ip) -> None:
    ip.rl_next_input = None
    with capture_output() as cap:
        reply = chat(ip, "-f code --seed 1 --num-predict 24 -t code", "Write Python that prints hello.")
    assert ip.rl_next_input == strip_fence(str(reply)) and ip.rl_next_input.strip()
    assert "the code is in a new cell below" in cap.stderr
    assert history(ip, "code").content[0] == "Write Python that prints hello.\n\n" + FORMAT_INSTRUCTIONS["code"]


def test_html_and_math_render_as_their_types_with_metadata(ip) -> None:
    page = chat(ip, "-f html --seed 1 --num-predict 16 -t forms", "A heading that says hi.")
    data, metadata = RICH.format(page)
    assert data["text/html"] == str(page) and "text/markdown" not in data
    assert metadata == {"ollama_magic": {"model": GEMMA, "thread": "forms"}}
    formula = chat(ip, "-f math --seed 1 --num-predict 16 -t forms", "The area of a circle.")
    data, _ = RICH.format(formula)
    assert data["text/latex"].startswith("$$\n") and data["text/latex"].endswith("\n$$")
    sent = list(history(ip, "forms").content[::2])
    assert sent[0].endswith(FORMAT_INSTRUCTIONS["html"]) and sent[1].endswith(FORMAT_INSTRUCTIONS["math"])
    plain, metadata = RICH.format(chat(ip, f"{SHORT} --no-history", "hi"))
    assert metadata["ollama_magic"]["model"] == GEMMA and "text/markdown" in plain


def test_max_history_bounds_the_turns_sent(ip) -> None:
    for text in ("My name is Ada.", "I live in Paris.", "I like tea."):
        chat(ip, SHORT, text)
    alone = chat(ip, f"{SHORT} --no-history", "Who am I?")
    none = chat(ip, f"{SHORT} --max-history 0", "Who am I?")
    one = chat(ip, f"{SHORT} --max-history 1", "Who am I?")
    everything = chat(ip, SHORT, "Who am I?")
    counts = [r.stats["prompt_eval_count"] for r in (alone, none, one, everything)]
    assert counts[0] == counts[1] < counts[2] < counts[3]


# ---- prompts over a column --------------------------------------------------------------------------

REVIEWS = pd.DataFrame(
    {"review": ["Great phone, the battery lasts days.", "Broke after a week.", "Great phone, the battery lasts days.",
                "Fine for the price."]},
    index=["r1", "r2", "r3", "r4"],
)


def test_over_a_column_returns_a_series_aligned_asks_repeats_once_and_is_reproducible(ip) -> None:
    ip.user_ns["df"] = REVIEWS
    ip.user_ns["n"] = 5
    line = '--over df.review --seed 2 --num-predict 10 "Summarize in {n} words: {text}"'
    with capture_output() as cap:
        first = chat(ip, line)
    assert isinstance(first, pd.Series) and list(first.index) == ["r1", "r2", "r3", "r4"]
    assert all(isinstance(v, str) and v for v in first)
    assert first["r1"] == first["r3"] and first.attrs["ollama_magic"]["asked"] == 3
    assert first.attrs["ollama_magic"]["prompt"] == "Summarize in 5 words: {text}"
    assert "rows" in cap.stderr  # the tqdm bar
    second = chat(ip, line)
    assert second.equals(first)  # --seed: the whole column again
    assert ip.run_line_magic("ollama", "threads").empty  # these turns enter no thread


def test_over_with_a_schema_gives_one_column_per_field(ip) -> None:
    ip.user_ns["df"] = REVIEWS
    ip.user_ns["schema"] = {"type": "object", "properties": {"sentiment": {"enum": ["positive", "negative"]},
                                                             "stars": {"type": "integer"}},
                            "required": ["sentiment", "stars"]}
    frame = chat(ip, '--over df.review -f json --schema schema --seed 1 --num-predict 40 -o rated "Rate: {text}"')
    assert ip.user_ns["rated"] is frame
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["sentiment", "stars"]
    assert list(frame.index) == list(REVIEWS.index)
    assert set(frame.sentiment) <= {"positive", "negative"} and all(isinstance(s, int) for s in frame.stars)


class FlakyBackend:
    """The real engine, except that one input fails the way a dropped connection would."""

    def __init__(self, engine, failing: str) -> None:  # noqa: ANN001
        self.engine, self.failing = engine, failing

    def chat(self, model, messages, **kwargs):  # noqa: ANN001, ANN003, ANN201
        if self.failing in messages[-1]["content"]:
            raise ConnectionError("connection reset by peer")
        return self.engine.chat(model, messages, **kwargs)


def test_over_a_failing_row_carries_its_error_and_the_rest_answer(ip) -> None:
    from ollama_magic.notebook import current_session

    backend = FlakyBackend(current_session().backend, failing="Broke")
    result = chat_over(REVIEWS.review, "Summarize: {text}", model=GEMMA, backend=backend,
                       options={"seed": 1, "num_predict": 6}, progress=False)
    assert isinstance(result["r2"], RowError) and "ConnectionError: connection reset by peer" in str(result["r2"])
    assert all(isinstance(result[k], str) and result[k] for k in ("r1", "r3", "r4"))
    assert result.attrs["ollama_magic"]["failed"] == 1


#: A reply that cannot end before 400 numbers: a row held long by grammar, not by hoping the model goes on.
LONG_REPLY = {"type": "array", "items": {"type": "integer"}, "minItems": 400}


class QuickAndLongRows:
    """The real engine; rows with "quick" in them end after 3 tokens, the others are held long by
    LONG_REPLY and wait to start until every quick row is decoding (so the quick rows have slots
    whatever order the workers reach the engine in). When the quick rows have finished, Ctrl-C:
    KeyboardInterrupt in the main thread, as the kernel's stop button raises it."""

    def __init__(self, engine, quick: int) -> None:  # noqa: ANN001
        self.engine, self.quick = engine, quick
        self.lock = threading.Lock()
        self.decoding: set[str] = set()
        self.finished = 0
        self.quick_decoding = threading.Event()
        self.decoded: set[str] = set()  # rows that received a token

    def chat(self, model, messages, **kwargs):  # noqa: ANN001, ANN003, ANN201
        text = messages[-1]["content"]
        quick = "quick" in text
        options = {**kwargs["options"], "num_predict": 3 if quick else 2000}
        if not quick:
            kwargs["format"] = LONG_REPLY
        return _Row(self.engine.chat(model, messages, **{**kwargs, "options": options}), self, text, quick)


class _Row:
    def __init__(self, stream, owner: QuickAndLongRows, text: str, quick: bool) -> None:  # noqa: ANN001
        self.stream, self.owner, self.text, self.quick = stream, owner, text, quick

    def __iter__(self):  # noqa: ANN204
        if not self.quick and not self.owner.quick_decoding.wait(timeout=300):
            raise RuntimeError("the quick rows never started")
        for chunk in self.stream:
            if self.quick:
                with self.owner.lock:
                    self.owner.decoding.add(self.text)
                    if len(self.owner.decoding) == self.owner.quick:
                        self.owner.quick_decoding.set()
            if not chunk.done:
                self.owner.decoded.add(self.text)
            yield chunk
        if self.quick:
            with self.owner.lock:
                self.owner.finished += 1
                if self.owner.finished == self.owner.quick:
                    _thread.interrupt_main()

    def cancel(self) -> None:
        self.stream.cancel()

    def close(self) -> None:
        self.stream.close()


def test_over_ctrl_c_stops_every_row_at_once_and_keeps_the_rows_that_finished(ip) -> None:
    from ollama_magic.notebook import current_session
    from ollama_magic.notebook.over import RowInterrupted

    engine = current_session().backend
    engine.load(GEMMA)
    [entry] = [e for e in engine.scheduler.loaded() if e.name == GEMMA]
    slots = len(entry.runner.decoder.slots)  # sequences decoded together (OLLAMA_NUM_PARALLEL)
    quick = [f"quick {i}" for i in range(2)]
    long = [f"long {i}" for i in range(slots + 6)]
    backend = QuickAndLongRows(engine, quick=len(quick))
    # more workers than slots: when Ctrl-C comes, `slots` long rows decode and the others wait for a slot
    result = chat_over(pd.Series(quick + long), "One word about: {text}", model=GEMMA, backend=backend,
                       options={"temperature": 0}, workers=slots + 4, progress=False)
    meta = result.attrs["ollama_magic"]
    assert meta["interrupted"] and meta["asked"] == 2 and meta["unfinished"] == len(long) and meta["failed"] == 0
    assert all(isinstance(v, str) and not isinstance(v, RowInterrupted) for v in result[:2])  # kept
    assert all(isinstance(v, RowInterrupted) for v in result[2:]) and "interrupted (Ctrl-C)" in str(result[5])
    # Every generation was cancelled at once: the rows queued for a slot were dropped unread, none of them
    # was let into a slot a cancelled row freed (stopping each row at its next token reads them all).
    started = [row for row in long if f"One word about: {row}" in backend.decoded]
    assert len(started) <= slots
    deadline = time.monotonic() + 30
    while (entry.active or entry.runner.decoder.busy()) and time.monotonic() < deadline:
        time.sleep(0.05)  # a bounded poll: the model must be idle now, not after 2000 tokens
    assert entry.active == 0 and not entry.runner.decoder.busy()


def test_over_batches_unseeded_rows_and_runs_a_seeded_column_one_row_at_a_time(ip) -> None:
    from ollama_magic.notebook import current_session

    engine = current_session().backend
    engine.unload(GEMMA)  # a fresh load: its decoder counts the most sequences it decoded together from zero
    column = pd.Series([f"Topic number {i}" for i in range(4)])
    chat_over(column, "Tell me about: {text}", model=GEMMA, backend=engine, options={"seed": 1, "num_predict": 16},
              progress=False)
    [entry] = [e for e in engine.scheduler.loaded() if e.name == GEMMA]
    assert entry.runner.decoder.peak_active == 1  # a seeded request runs alone (docs/BENCHMARKS.md)
    batched = chat_over(column, "Tell me about: {text}", model=GEMMA, backend=engine,
                        options={"temperature": 0, "num_predict": 16}, progress=False)
    assert entry.runner.decoder.peak_active > 1  # temperature 0 without a seed: rows decoded side by side
    assert batched.notna().all()


# ---- notebook context -------------------------------------------------------------------------------

def test_context_and_vars_are_attached_and_shown_collapsed(ip) -> None:
    from ollama_magic.notebook import current_session

    run(ip, "price = 41")
    shown = run(ip, "price + 1").execution_count
    ip.user_ns["df"] = pd.DataFrame({"city": ["Paris", "Oslo", "Rome"], "temp": [21.5, 9.0, 25.25]})
    with capture_output() as cap:  # as a notebook runs it: a cell of its own, which is not part of the context
        ran = run(ip, f"%%chat --context 2 --vars df -t ctx {SHORT}\nWhat is in my notebook?")
    assert ran.success and ran.execution_count == shown + 1
    label = next(o.data["text/plain"] for o in cap.outputs if o.data["text/plain"].startswith("sent with:"))
    assert label.startswith(f"sent with: cells {shown - 1}-{shown}; vars df (") and label.endswith(" tokens)")
    sent = history(ip, "ctx").content[0]
    assert "price = 41" in sent and f"[output {shown}]\n42" in sent and sent.rstrip().endswith("Message:\nWhat is in my notebook?")
    assert "df: DataFrame, 3 rows x 2 columns" in sent and "city: str, temp: float64" in sent and "Oslo" in sent
    context_text = sent[: sent.index("\n\nMessage:\n")]
    engine = current_session().backend
    runner = next(e.runner for e in engine.scheduler if e.key == (GEMMA, False))
    assert label.endswith(f"({len(runner.tokenize(context_text, add_bos=False))} tokens)")  # the model's tokenizer


def test_context_finds_cells_run_without_history_as_nbval_runs_them(ip) -> None:
    from ollama_magic.notebook.cell_log import cell_log
    from ollama_magic.notebook.context import recent_cells

    for code in ("price_nh = 41", "price_nh + 1", "int('nine')"):
        ip.run_cell(code, store_history=False)  # nbval's way: In and Out stay empty
    with capture_output() as cap:
        ran = ip.run_cell(f"%%chat --context 3 -t nohist {SHORT}\nWhat did I do?", store_history=False)
    assert ran.success
    label = next(o.data["text/plain"] for o in cap.outputs if o.data["text/plain"].startswith("sent with:"))
    assert label.startswith("sent with: the last 3 cells (")  # no numbers: the cells ran without history
    sent = history(ip, "nohist").content[0]
    assert "```python\nprice_nh = 41\n```" in sent and "price_nh + 1\n```\n[output]\n42" in sent
    assert "[error]\nTraceback" in sent and "ValueError: invalid literal for int() with base 10: 'nine'" in sent
    cell_log(ip).cells.clear()  # an extension loaded after the cells ran has no record: In/Out as before
    n = run(ip, "6 * 7").execution_count
    cell_log(ip).cells.clear()
    assert recent_cells(ip, 1) == [(n, f"[cell {n}]\n```python\n6 * 7\n```\n[output {n}]\n42")]


def test_context_is_fitted_to_the_models_context_oldest_cells_first(ip) -> None:
    for i in range(6):
        run(ip, f"# cell {i}\n" + "\n".join(f"row_{i}_{j} = {j} * 1000" for j in range(12)))
    with capture_output() as cap:
        chat(ip, f"--context 6 -t fit {SHORT} --options '{{\"num_ctx\": 512}}'", "Summarize.")
    label = next(o.data["text/plain"] for o in cap.outputs if o.data["text/plain"].startswith("sent with:"))
    tokens = int(label.rsplit("(", 1)[1].split()[0])
    assert tokens <= 256
    sent = history(ip, "fit").content[0]
    assert "# cell 5" in sent and "# cell 0" not in sent  # the newest kept, the oldest left out


# ---- tools from Python functions --------------------------------------------------------------------

@pytest.fixture
def tools_model(ip) -> str:  # noqa: ANN001
    from ollama_magic.notebook import current_session

    current_session().backend.create("gemma-tools", from_=GEMMA, template=TOOLS_TEMPLATE)
    return "gemma-tools"


def _define_add(ip) -> list:  # noqa: ANN001
    calls: list = []

    def add(a: int, b: int) -> int:
        """Add two whole numbers.

        Args:
            a: the first number
            b: the second number
        """
        calls.append((a, b))
        return a + b

    ip.user_ns["add"] = add
    return calls


def test_tools_run_in_the_kernel_and_the_result_goes_back(ip, tools_model: str) -> None:
    calls = _define_add(ip)
    with capture_output() as cap:
        reply = chat(ip, f"--tools add --tool-choice required -m {tools_model} -t tools --seed 1 --num-predict 24",
                     "What is 2 plus 3? Use the tool.")
    assert calls and all(isinstance(a, int) and isinstance(b, int) for a, b in calls)
    shown = [o for o in cap.outputs if o.data["text/plain"].startswith("tool call: add(")]
    assert len(shown) == len(calls)
    a, b = calls[0]
    assert shown[0].data["text/plain"] == f"tool call: add(a={a}, b={b}) -> {a + b}"
    assert isinstance(reply, ChatReply)
    assert list(history(ip, "tools").role) == ["user", "assistant"]


#: SmolLM2 with a Hermes-style tool template: its calls start with the ``<tool_call>`` tag, as Qwen's do.
TAGGED_TOOLS_TEMPLATE = """{{- if .Tools }}<|im_start|>system
You can call these tools. To call one, answer with <tool_call>{"name": ..., "arguments": {...}}</tool_call>.
{{ range .Tools }}{{ . }}
{{ end }}<|im_end|>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .ToolCalls }}{{ range .ToolCalls }}<tool_call>
{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
</tool_call>{{ end }}{{ else }}{{ .Content }}{{ end }}<|im_end|>
{{ else if eq .Role "tool" }}<|im_start|>user
<tool_response>{{ .Content }}</tool_response><|im_end|>
{{ end }}
{{- end }}<|im_start|>assistant
"""


def test_tool_choice_required_calls_the_tool_with_a_tool_call_tag_template(ip) -> None:
    """The forced call is the engine's (tag, then the call's JSON): the tool really runs, rather than
    bare JSON coming back as the answer (review R1)."""
    from ollama_magic.notebook import current_session

    current_session().backend.create("smollm2-tagged", from_="smollm2:135m", template=TAGGED_TOOLS_TEMPLATE)
    calls = _define_add(ip)
    with capture_output() as cap:
        reply = chat(ip, "--tools add --tool-choice required -m smollm2-tagged -t tagged --seed 1 --num-predict 32",
                     "What is 2 plus 3? Use the tool.")
    assert calls and all(isinstance(a, int) and isinstance(b, int) for a, b in calls)
    assert any(o.data["text/plain"].startswith("tool call: add(") for o in cap.outputs)
    assert '"name"' not in str(reply)  # the call ran; it is not the answer


def test_tools_confirm_asks_before_each_call(ip, tools_model: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _define_add(ip)
    asked: list[str] = []
    monkeypatch.setattr(builtins, "input", lambda prompt: asked.append(prompt) or "n")
    with capture_output() as cap:
        chat(ip, f"--tools add --confirm --tool-choice required -m {tools_model} --no-history --seed 1 "
                 "--num-predict 24", "What is 2 plus 3?")
    assert asked and asked[0].startswith("run add(") and asked[0].endswith("? [y/N] ")
    assert calls == []  # declined: never ran
    assert any("the user declined" in o.data.get("text/plain", "") for o in cap.outputs)


def test_tools_errors_are_one_line(ip) -> None:
    ip.user_ns["not_a_function"] = 3
    with pytest.raises(UsageError, match="no function named 'nope'"):
        chat(ip, f"--tools nope {SHORT}", "hi")
    with pytest.raises(UsageError, match="'not_a_function' is a int, not a function"):
        chat(ip, f"--tools not_a_function {SHORT}", "hi")
    _define_add(ip)
    with pytest.raises(UsageError, match="does not support tools"):
        chat(ip, f"--tools add {SHORT}", "hi")  # gemma3:270m's own template has no .Tools


def test_flags_that_only_go_together_are_one_line_errors(ip) -> None:
    with pytest.raises(UsageError, match="--workers goes with --over"):
        chat(ip, "--workers 2 hi")
    with pytest.raises(UsageError, match="--schema shapes a JSON reply: use it with -f json"):
        chat(ip, "--schema '{}' hi")
    with pytest.raises(UsageError, match="--confirm and --tool-choice go with --tools"):
        chat(ip, "--confirm hi")
    ip.user_ns["df"] = REVIEWS
    with pytest.raises(UsageError, match="cannot be combined with --tools, --context or --vars"):
        chat(ip, "--over df.review --context 2 hi {text}")
    with pytest.raises(UsageError, match=r"--over nope\.review: NameError"):
        chat(ip, "--over nope.review hi")
