"""The widget panel in a real browser: JupyterLab on loopback, driven by Playwright with the system's
Chromium (Playwright's own browser download is not used).

nbval and the headless widget tests run no JavaScript, so they never see a widget *view*: whether the
Tab, the Select, the streamed reply and the PNG in an Output widget really render in JupyterLab is
only checked here. It opens ``notebooks/05-widgets.ipynb`` (a copy, in a temp dir with its own model
store and conversations), runs all cells, then clicks through Models (select gemma3:270m, open its
details), Chat (the default smollm2:135m: type, Send, wait for the reply; then a long reply, stopped
while it streams),
Running (the keep-alive countdown) and Embeddings (a DataFrame column, plotted), and takes a
screenshot of each (plus the Chat tab in the dark theme) into ``$OLLAMA_MAGIC_SCREENSHOTS``
(default ``/tmp/ollama-magic-browser``), with ``timings.json`` and the server's log. On a failure it
saves ``failure.png`` and ``failure.html`` there.

It needs extra software: playwright and jupyterlab (``pip install -e '.[browser]'``) and Debian's
``chromium`` package (``apt-get install chromium``, as root, or ``$CHROMIUM``). ``make browser-deps``
installs them, and ``.ci/run`` (root) does so before ``make test``; without them the test is skipped
with a message naming what is missing. ``OLLAMA_MAGIC_BROWSER_TEST=0`` skips it anyway (it is slow)::

    make browser-test
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "05-widgets.ipynb"
SCREENSHOTS = Path(os.environ.get("OLLAMA_MAGIC_SCREENSHOTS", "/tmp/ollama-magic-browser"))
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser") or ""


def missing_software() -> str | None:
    """Why the browser test cannot run here, naming the package to install; None when it can."""
    if os.environ.get("OLLAMA_MAGIC_BROWSER_TEST") == "0":
        return "browser test: skipped by OLLAMA_MAGIC_BROWSER_TEST=0"
    if not CHROMIUM:
        return ("browser test: needs Debian's chromium package (as root: apt-get install chromium, which "
                "make browser-deps and .ci/run do) or $CHROMIUM naming a Chromium binary")
    missing = [name for name in ("playwright", "jupyterlab") if importlib.util.find_spec(name) is None]
    if missing:
        return f"browser test: needs the Python package(s) {', '.join(missing)} (pip install -e '.[browser]')"
    return None


pytestmark = [pytest.mark.integration, pytest.mark.skipif(missing_software() is not None, reason=str(missing_software()))]
SERVER_START = 90.0  # seconds for jupyter lab to answer
CELLS_RUN = 240.0  # seconds for all cells (the first %ollama setup registers the models)
REPLY = 180.0  # seconds for a reply on two shared cores
UI = 30.0  # seconds for a click to show its effect
MESSAGE = "Say hello to a lighthouse keeper."
CHAT_MODEL = "smollm2:135m"  # the default chat model, which the Chat tab offers first


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback only
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def timings() -> Iterator[dict[str, float]]:
    spent: dict[str, float] = {}
    yield spent
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "timings.json").write_text(json.dumps(spent, indent=2) + "\n")
    print(f"\nbrowser test timings (s): {spent}; screenshots in {SCREENSHOTS}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, timings: dict[str, float]) -> Iterator[str]:
    """A JupyterLab server on 127.0.0.1 with a token, in a temp dir holding a copy of the notebook;
    yields the notebook's URL. Its own model store, conversations and Jupyter/IPython dirs, so the
    run touches nothing of the user's."""
    if not CHROMIUM:
        pytest.fail("no Chromium found: apt-get install chromium, or set CHROMIUM=/path/to/chrome")
    root = tmp_path_factory.mktemp("lab")
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    settings = root / ".lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "OLLAMA_MODELS": str(root / "models"),
        "OLLAMA_MAGIC_CONVERSATIONS": str(root / "conversations"),
        "JUPYTER_CONFIG_DIR": str(root / ".jupyter"),
        "JUPYTER_RUNTIME_DIR": str(root / ".runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(root / ".lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / ".lab-workspaces"),
        "IPYTHONDIR": str(root / ".ipython"),
    }
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    log = open(SCREENSHOTS / "jupyter-lab.log", "wb")  # noqa: SIM115 - closed below
    started = time.monotonic()
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         *(["--allow-root"] if os.geteuid() == 0 else [])],  # containers and CI often run as root
        cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START
        while not _answers(f"{base}/api/status?token={token}"):
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"jupyter lab did not start; see {SCREENSHOTS / 'jupyter-lab.log'}")
            time.sleep(0.25)
        timings["server_start_s"] = round(time.monotonic() - started, 1)
        yield f"{base}/lab/tree/{NOTEBOOK.name}?token={token}"
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(5)
        log.close()


@pytest.fixture(scope="module")
def page(lab: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox"] if os.geteuid() == 0 else [],  # Chromium refuses root without it
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(lab)
        page.errors = errors  # type: ignore[attr-defined]
        yield page
        browser.close()


def _shot(page: Any, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def _tab(page: Any, title: str) -> None:
    """Open a tab of the widget panel (not one of JupyterLab's own tabs)."""
    page.locator(".widget-tab .lm-TabBar-tab", has_text=re.compile(f"^{title}$")).click()


def _button(page: Any, text: str) -> Any:
    """A visible widget button by its text (its accessible name also holds the icon font's glyph)."""
    return page.locator(".widget-tab button.widget-button:visible", has_text=re.compile(f"^\\s*{text}$"))


def test_panel_in_jupyterlab(page: Any, timings: dict[str, float]) -> None:
    try:
        _click_through(page, timings)
    except BaseException:
        _shot(page, "failure")
        (SCREENSHOTS / "failure.html").write_text(page.content())
        raise


def _click_through(page: Any, timings: dict[str, float]) -> None:
    from playwright.sync_api import expect

    started = time.monotonic()
    page.locator(".jp-NotebookPanel").wait_for(timeout=UI * 2000)
    # the kernel has started and is idle: the status bar says so
    expect(page.get_by_text(re.compile(r"\| Idle$"))).to_be_visible(timeout=UI * 4000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()
    tabs = page.locator(".widget-tab .lm-TabBar-tab")
    expect(tabs).to_have_count(5, timeout=CELLS_RUN * 1000)
    expect(tabs).to_have_text(["Models", "Running", "Create", "Chat", "Embeddings"])
    expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(1,
                                                                                            timeout=CELLS_RUN * 1000)
    timings["open_and_run_all_s"] = round(time.monotonic() - started, 1)
    page.locator(".widget-tab").scroll_into_view_if_needed()

    # Models: select gemma3:270m, open its details
    started = time.monotonic()
    _tab(page, "Models")
    table = page.locator(".widget-tab .widget-select select:visible").first
    expect(table.locator("option")).to_have_count(3, timeout=UI * 1000)  # smollm2, gemma3, all-minilm
    labels = table.locator("option").all_text_contents()
    table.select_option(index=next(i for i, text in enumerate(labels) if text.startswith("gemma3:270m")))
    expect(page.get_by_text("Selected:")).to_contain_text("gemma3:270m", timeout=UI * 1000)
    page.locator(".widget-tab .jupyter-widget-Collapse-header:visible", has_text=re.compile("^Model$")).click()
    details = page.locator(".widget-tab .jupyter-widget-Collapse-contents:visible").first
    expect(details).to_contain_text("architecture", timeout=UI * 1000)
    expect(details).to_contain_text("gemma3")
    expect(details).to_contain_text("context length")
    _shot(page, "1-models")
    timings["models_s"] = round(time.monotonic() - started, 1)

    # Chat: type, Send, wait for the reply
    started = time.monotonic()
    _tab(page, "Chat")
    page.locator(".widget-tab .jupyter-widget-Collapse-header:visible", has_text="Options").click()
    num_predict = page.locator(".widget-text:visible", has=page.locator("label", has_text="num_predict")).locator("input")
    num_predict.fill("32")
    page.locator(".widget-text:visible", has=page.locator("label", has_text="seed")).locator("input").fill("1")
    message = page.get_by_placeholder("Message (Enter makes a new line; press Send)")
    message.fill(MESSAGE)
    send, stop = _button(page, "Send"), _button(page, "Stop")
    send.click()
    expect(send).to_be_disabled(timeout=UI * 1000)
    status = page.get_by_text(re.compile(rf"{re.escape(CHAT_MODEL)} · thread 'main' · \d+ tokens in"))
    expect(status).to_be_visible(timeout=REPLY * 1000)
    expect(send).to_be_enabled()
    expect(stop).to_be_disabled()
    history = page.locator(".widget-tab .om-chat:visible").first
    messages = history.locator(".om-msg")
    expect(messages).to_have_count(2)
    expect(messages.nth(0)).to_contain_text(MESSAGE)
    expect(messages.nth(1).locator(".om-role")).to_have_text(CHAT_MODEL)
    assert messages.nth(1).inner_text().replace(CHAT_MODEL, "").strip(), "the reply is empty"
    expect(page.get_by_role("option", name=re.compile(r"^main \(2\)$"))).to_have_count(1)
    _shot(page, "2-chat")
    timings["chat_s"] = round(time.monotonic() - started, 1)

    # Chat again, long: the reply grows in place until Stop, and is kept, marked interrupted
    started = time.monotonic()
    num_predict.fill("400")
    message.fill("Tell me a long story about the sea.")
    send.click()
    growing = page.locator(".widget-tab .widget-html:visible .om-chat:not(.om-scroll) .om-msg")
    expect(growing).to_contain_text(re.compile(r"\w"), timeout=REPLY * 1000)
    expect(stop).to_be_enabled()
    _shot(page, "3-chat-streaming")
    stop.click()
    expect(page.get_by_text(re.compile(r"^stopped: the partial reply is kept"))).to_be_visible(timeout=REPLY * 1000)
    expect(send).to_be_enabled()
    expect(messages).to_have_count(4)
    expect(messages.nth(3).locator(".om-role")).to_have_text(f"{CHAT_MODEL} · interrupted")
    timings["chat_stop_s"] = round(time.monotonic() - started, 1)

    # Running: the chat loaded the default chat model, all of it on the CPU here
    _tab(page, "Running")
    running = page.locator(".widget-tab .widget-gridbox:visible")
    expect(running).to_contain_text(CHAT_MODEL, timeout=UI * 1000)
    expect(running).to_contain_text("0/31", timeout=UI * 1000)
    expect(running).to_contain_text(re.compile(r"4m \d\ds"), timeout=UI * 1000)  # the timer counts down
    _shot(page, "4-running")

    # Embeddings: a DataFrame column from the notebook, plotted
    started = time.monotonic()
    _tab(page, "Embeddings")
    page.get_by_placeholder("variable name").fill("reviews")
    _button(page, "Embed").click()
    expect(page.get_by_text(re.compile(r"4 texts × 384 dims"))).to_be_visible(timeout=REPLY * 1000)
    expect(page.locator(".widget-tab .widget-output:visible img")).to_have_count(1)
    page.locator(".widget-tab").screenshot(path=str(SCREENSHOTS / "5-embeddings.png"))
    timings["embeddings_s"] = round(time.monotonic() - started, 1)

    # The same chat in the dark theme: colours come from the theme's variables
    page.get_by_role("menuitem", name="Settings", exact=True).click()
    page.get_by_text("Theme", exact=True).hover()
    page.get_by_text("JupyterLab Dark", exact=True).click()
    expect(page.locator("body[data-jp-theme-light='false']")).to_have_count(1, timeout=UI * 1000)
    _tab(page, "Chat")
    text_colour = history.locator(".om-msg").nth(1).evaluate("e => getComputedStyle(e).color")
    page_colour = page.evaluate("() => getComputedStyle(document.body).getPropertyValue('--jp-ui-font-color1')")
    _shot(page, "6-chat-dark")
    assert text_colour != "rgb(0, 0, 0)", f"chat text stays black in the dark theme ({text_colour}, {page_colour})"

    assert "Error displaying widget" not in page.content()
    assert page.errors == [], page.errors  # type: ignore[attr-defined]
