"""The Models, Running and Create panels, driven headless (trait values and ``.click()``) against the
real engine on a writable clone of the registered store. Background jobs are awaited with ``wait()``
(a join with a timeout), never with sleeps."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from ollama_magic.engine import Engine
from ollama_magic.formatting import human_bytes
from ollama_magic.notebook.conversations import ConversationStore
from ollama_magic.notebook.session import NotebookSession
from ollama_magic.notebook.widgets.create import SOURCE_MODEL, CreatePanel
from ollama_magic.notebook.widgets.models import ModelsPanel
from ollama_magic.notebook.widgets.running import RunningPanel, time_left

pytestmark = pytest.mark.integration
GEMMA = "gemma3:270m"
MINILM = "all-minilm:latest"
JOB_TIMEOUT = 120


@pytest.fixture
def engine(tmp_path: Path, clone_registered) -> Iterator[Engine]:
    engine = Engine(clone_registered(tmp_path / "models"))
    yield engine
    engine.close()


@pytest.fixture
def session(engine: Engine, tmp_path: Path) -> NotebookSession:
    return NotebookSession(shell=None, engine=engine, conversations=ConversationStore(tmp_path / "conv"))


@pytest.fixture
def models(session: NotebookSession) -> Iterator[ModelsPanel]:
    panel = ModelsPanel(session)
    yield panel
    panel.close()


def finish(panel) -> None:  # noqa: ANN001
    assert panel.wait(JOB_TIMEOUT), "the background job did not finish"


def installed(session: NotebookSession) -> set[str]:
    return {m.model for m in session.backend.list().models}


# ---- ModelsPanel ---------------------------------------------------------------------------------

def test_models_table_lists_installed_models_with_human_sizes(models: ModelsPanel, session: NotebookSession) -> None:
    rows = {r["name"]: r for r in models.rows()}
    assert set(rows) == {"smollm2:135m", GEMMA, MINILM}
    sizes = {m.model: m.size for m in session.backend.list().models}
    assert rows[GEMMA]["size"] == human_bytes(sizes[GEMMA]) and re.fullmatch(r"\d+ MB", rows[GEMMA]["size"])
    assert rows[GEMMA]["family"] == "gemma3" and rows[GEMMA]["quantization"] == "Q4_K_M"
    assert rows[GEMMA]["modified"].endswith("ago")
    # what the user sees: one selectable option per model, the header naming the columns
    assert [value for _label, value in models.table.options] == [r["name"] for r in models.rows()]
    assert any(GEMMA in label and rows[GEMMA]["size"].replace(" ", "\u00a0") in label
               for label, _ in models.table.options)
    assert "SIZE" in models.header.value and "var(--jp-" in models.header.value


def test_filter_narrows_rows_case_insensitively(models: ModelsPanel) -> None:
    models.filter.value = "MiniLM"
    assert [r["name"] for r in models.rows()] == [MINILM]
    assert [value for _label, value in models.table.options] == [MINILM]
    models.filter.value = "nothing-like-this"
    assert models.rows() == [] and "No model matches" in models.empty_note.value
    models.filter.value = ""
    assert len(models.rows()) == 3


def test_selecting_a_row_fills_the_details_accordion(models: ModelsPanel, session: NotebookSession) -> None:
    assert models.details() is None and models.load_button.disabled  # nothing selected: no actions
    models.table.value = GEMMA
    details = models.details()
    assert details is not None and details["name"] == GEMMA
    assert details["template"] == session.backend.show(GEMMA).template and "<start_of_turn>" in details["template"]
    titles = list(models.details_box.titles)
    template_html = models.details_box.children[titles.index("Template")].value
    assert "&lt;start_of_turn&gt;" in template_html
    assert "stop" in models.details_box.children[titles.index("Parameters")].value
    assert "FROM" in models.details_box.children[titles.index("Modelfile")].value
    assert not models.load_button.disabled and not models.delete_button.disabled


def test_copy_creates_the_model_and_refreshes_the_table(models: ModelsPanel, session: NotebookSession) -> None:
    models.select(GEMMA)
    models.copy_name.value = "gemma-copy"
    models.copy_button.click()
    finish(models)
    assert "gemma-copy:latest" in installed(session)
    assert "gemma-copy:latest" in [r["name"] for r in models.rows()]
    assert models.selected == "gemma-copy:latest" and models.status.kind == "ok"
    assert models.copy_name.value == "" and not models.copy_button.disabled


def test_delete_needs_the_confirm_step(models: ModelsPanel, session: NotebookSession) -> None:
    session.backend.copy(GEMMA, "doomed")
    models.refresh_button.click()
    finish(models)
    models.select("doomed:latest")
    models.delete_button.click()
    assert "doomed:latest" in installed(session), "the first click must only ask"
    assert models.pending_delete == "doomed:latest" and "Really delete" in models.confirm_text.value
    assert models.confirm_box.layout.display != "none"
    models.cancel_button.click()
    assert models.pending_delete is None and models.confirm_box.layout.display == "none"
    assert "doomed:latest" in installed(session)

    models.delete_button.click()
    models.confirm_button.click()
    finish(models)
    assert "doomed:latest" not in installed(session)
    assert "doomed:latest" not in [r["name"] for r in models.rows()]
    assert models.selected is None and models.status.text == "deleted doomed:latest"


def test_use_sets_the_notebook_default(models: ModelsPanel, session: NotebookSession) -> None:
    session.backend.copy(GEMMA, "terse")
    models.refresh()
    models.select("terse:latest")
    models.use_button.click()
    finish(models)
    assert session.chat_model == "terse:latest" and models.status.text == "%%chat now uses terse:latest"

    models.select(MINILM)  # an embedding-only model becomes the %embed default instead
    models.use_button.click()
    finish(models)
    assert session.embed_model == MINILM and session.chat_model == "terse:latest"
    assert models.status.text == f"%embed now uses {MINILM}"


def test_backend_errors_show_one_line_in_the_status(models: ModelsPanel, session: NotebookSession) -> None:
    session.backend.copy(GEMMA, "ghost")
    models.refresh()
    models.select("ghost:latest")
    session.backend.delete("ghost")  # gone behind the panel's back
    models.load_button.click()
    finish(models)
    assert models.status.kind == "error" and models.status.text == 'model "ghost:latest" not found'
    assert "Traceback" not in models.status.widget.value and "var(--jp-error-color1)" in models.status.widget.value
    assert not models.load_button.disabled  # buttons come back after a failure


# ---- RunningPanel --------------------------------------------------------------------------------

def test_load_then_running_panel_counts_down_and_unloads(models: ModelsPanel, session: NotebookSession) -> None:
    running = RunningPanel(session, interval=0)
    try:
        assert running.rows() == [] and "No model is loaded" in running.empty_note.value
        models.select(GEMMA)
        models.keep_alive.value = "30m"
        models.load_button.click()
        finish(models)
        assert models.status.text == f"loaded {GEMMA}"

        rows = running.refresh()
        assert [r["name"] for r in rows] == [GEMMA]
        assert rows[0]["processor"] == "100% CPU" and rows[0]["gpu_layers"] == "0/19"  # no GPU here
        assert re.fullmatch(r"(29m|30m) \d\ds", rows[0]["until"]), rows[0]["until"]
        assert any("100% CPU" in cell.value for cell in running.grid.children if hasattr(cell, "value"))

        running.unload_button(GEMMA).click()
        finish(running)
        assert session.backend.ps().models == [] and running.rows() == []
        assert running.unload_button(GEMMA) is None and running.status.text == f"unloaded {GEMMA}"
    finally:
        running.close()


def test_running_panel_timer_refreshes_and_stops_on_close(session: NotebookSession) -> None:
    running = RunningPanel(session, interval=0.05)
    timer = running.timer
    assert timer is not None and timer.is_alive() and timer.daemon
    session.backend.load(GEMMA, keep_alive=-1)
    try:
        # the timer, not the test, notices the load: wait on the grid's children trait
        import threading

        seen = threading.Event()
        running.grid.observe(lambda _c: seen.set(), names="children")
        if not running.rows():
            assert seen.wait(JOB_TIMEOUT)
        assert running.rows()[0]["until"] == "forever"
    finally:
        running.close()
        session.backend.unload(GEMMA)
    assert not timer.is_alive()
    assert running.widget.comm is None


def test_time_left_counts_down() -> None:
    now = datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert time_left(now + timedelta(minutes=4, seconds=59), now) == "4m 59s"
    assert time_left(now + timedelta(hours=1, minutes=2, seconds=3), now) == "1h 02m"
    assert time_left(now + timedelta(seconds=7), now) == "7s"
    assert time_left(now - timedelta(seconds=1), now) == "now"
    assert time_left(datetime(2318, 1, 1, tzinfo=timezone.utc), now) == "forever"


# ---- CreatePanel ---------------------------------------------------------------------------------

def test_create_from_a_gguf_path_with_system_and_parameter(session: NotebookSession, gemma_blob: Path,
                                                           tmp_path: Path) -> None:
    weights = tmp_path / "w.gguf"
    weights.symlink_to(gemma_blob)
    created: list[str] = []
    panel = CreatePanel(session, on_created=created.append)
    try:
        panel.path.value = str(weights)
        panel.name.value = "terse"
        panel.system.value = "You are terse."
        panel.add_parameter_button.click()
        row = panel.parameter_rows[0]
        row.name.value, row.value.value = "temperature", "0.2"
        seen_progress: list[int] = []
        panel.progress.observe(lambda c: seen_progress.append(c["new"]), names="value")
        panel.create_button.click()
        assert panel.create_button.disabled  # while working
        finish(panel)
        assert panel.errors() == {} and panel.status.text == "created terse", panel.status.text
        assert created == ["terse"]
        assert panel.progress.value == panel.progress.max and 0 < min(seen_progress) < 100
        assert not panel.create_button.disabled
        shown = session.backend.show("terse")
        assert shown.system == "You are terse."
        assert re.search(r"temperature\s+0.2", shown.parameters)
        assert "terse:latest" in panel.base.options  # the base list knows the new model
    finally:
        panel.close()


def test_create_quantizes_an_f16_model_with_a_progress_bar(session: NotebookSession) -> None:
    panel = CreatePanel(session)
    try:
        panel.source.value = SOURCE_MODEL
        panel.base.value = MINILM
        panel.name.value = "minilm-panel-q8"
        panel.quantize.value = "q8_0"
        seen_progress: list[int] = []
        panel.progress.observe(lambda c: seen_progress.append(c["new"]), names="value")
        panel.create()
        finish(panel)
        assert panel.status.text == "created minilm-panel-q8", panel.errors() or panel.status.text
        assert session.backend.show("minilm-panel-q8").details.quantization_level == "Q8_0"
        assert any(0 < p < 100 for p in seen_progress)
        panel.name.value, panel.base.value = "gemma-requantized", GEMMA
        panel.create()
        finish(panel)
        assert panel.status.text == "quantization is only supported for F16, BF16 and F32 models"
    finally:
        panel.close()


def test_create_from_an_installed_model_prefills_its_template(session: NotebookSession) -> None:
    panel = CreatePanel(session)
    try:
        panel.source.value = SOURCE_MODEL
        assert panel.file_box.layout.display == "none" and panel.model_box.layout.display != "none"
        panel.base.value = GEMMA
        assert panel.template.value == session.backend.show(GEMMA).template
        panel.name.value = "gemma-stop"
        panel.add_parameter("stop", "###")
        panel.add_parameter("stop", "<end_of_turn>")
        panel.create()
        finish(panel)
        assert panel.status.text == "created gemma-stop", panel.errors() or panel.status.text
        shown = session.backend.show("gemma-stop")
        assert shown.template == session.backend.show(GEMMA).template
        assert '"###"' in shown.parameters and panel.progress.value == panel.progress.max
    finally:
        panel.close()


def test_form_errors_show_under_their_fields_and_create_nothing(session: NotebookSession, tmp_path: Path) -> None:
    before = installed(session)
    created: list[str] = []
    panel = CreatePanel(session, on_created=created.append)
    try:
        panel.path.value = str(tmp_path / "missing.gguf")
        panel.name.value = "bad name!"
        good = panel.add_parameter("top_k", "20")
        bad = panel.add_parameter("temperature", "hot")
        panel.create_button.click()
        assert panel.worker is None  # nothing started
        errors = panel.errors()
        assert "missing.gguf: no such file" in errors["source"]
        assert "bad name!" in errors["name"] and panel.name_error.widget.layout.display != "none"
        assert errors["parameter 2"] == "parameter 'temperature' must be a number, got 'hot'"
        assert "parameter 1" not in errors and good.error.text == ""
        assert "hot" in bad.error.widget.value and "var(--jp-error-color1)" in bad.error.widget.value
        assert panel.status.kind == "error" and installed(session) == before and created == []

        # fixing the fields clears their errors
        panel.name.value = "fine"
        bad.value.value = "0.5"
        panel.remove_parameter(good)
        panel.path.value = ""
        panel.create_button.click()
        assert set(panel.errors()) == {"source"} and "path of a GGUF" in panel.errors()["source"]
        assert len(panel.parameter_rows) == 1 and installed(session) == before
    finally:
        panel.close()


def test_backend_errors_land_under_the_field(session: NotebookSession, tmp_path: Path) -> None:
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model")
    panel = CreatePanel(session)
    try:
        panel.path.value = str(not_gguf)
        panel.name.value = "nope"
        panel.create()
        finish(panel)
        assert "is not a GGUF file" in panel.errors()["source"]
        assert panel.progress.bar_style == "danger" and "nope:latest" not in installed(session)
        assert not panel.create_button.disabled
    finally:
        panel.close()


def test_upload_is_saved_to_a_temp_file_and_created_from(session: NotebookSession, tiny_gguf: Path) -> None:
    panel = CreatePanel(session)
    try:
        data = tiny_gguf.read_bytes()
        panel.upload.value = ({"name": "tiny.gguf", "type": "", "size": len(data), "content": memoryview(data),
                               "last_modified": datetime.now(timezone.utc)},)
        finish(panel)
        temp = Path(panel.path.value)
        assert temp.name == "tiny.gguf" and temp.read_bytes() == data
        panel.name.value = "tiny"
        panel.create()
        finish(panel)
        assert panel.status.text == "created tiny", panel.errors() or panel.status.text
        assert "tiny:latest" in installed(session)
        assert not temp.exists() and panel.path.value == ""  # the store has its copy
    finally:
        panel.close()
