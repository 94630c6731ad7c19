"""Images end to end on the ``tiny-vision`` fixture (smollm2:135m + a projector of random weights):
libmtmd decodes and encodes for real, so the plumbing is what is tested (counts, errors, caching,
determinism, memory); the answers themselves are meaningless."""

from __future__ import annotations

import base64
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import ollama
import openai
import pytest
import requests
from PIL import Image

from ollama_magic import Engine
from ollama_magic.engine.images import NO_VISION
from ollama_magic.server import BackgroundServer
from ollama_magic.store import ModelStore
from ollama_magic.tiny_vision import TOKENS_PER_IMAGE

from .test_bring_a_model import _blob, ollama_pulled_store

pytestmark = pytest.mark.integration
VISION = "tiny-vision"
TEXT_ONLY = "smollm2:135m"
OPTS = {"num_ctx": 1024, "num_predict": 3, "seed": 7}  # short answers: the machine running CI is small


def png(color: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", size, color)
    image.putpixel((3, 3), (255 - color[0], 255 - color[1], 255 - color[2]))  # not a flat colour
    image.save(buffer, format="PNG")
    return buffer.getvalue()


RED, BLUE = png((220, 20, 20)), png((20, 20, 220))


@pytest.fixture(scope="module")
def engine(vision_store: ModelStore) -> Iterator[Engine]:
    with Engine(vision_store) as engine:
        yield engine


def ask(engine: Engine, *images: object, text: str = "What is in the picture?", **options) -> ollama.ChatResponse:
    message = {"role": "user", "content": text, "images": list(images)}
    return engine.chat(VISION, [message], options={**OPTS, **options})


def test_show_gives_the_projector_and_the_vision_capability_and_says_it_is_a_fixture(engine: Engine) -> None:
    shown = engine.show(VISION)
    assert shown.capabilities == ["completion", "tools", "vision"]
    assert shown.projector_info["clip.projector_type"] == "idefics3"
    assert shown.projector_info["clip.vision.projection_dim"] == shown.model_info["llama.embedding_length"] == 576
    assert "plumbing fixture" in shown.projector_info["general.description"]
    assert "plumbing fixture" in shown.license
    assert shown.modelfile.count("\nFROM ") == 2
    assert engine.show(TEXT_ONLY).projector_info is None


def test_image_tokens_are_counted_in_prompt_eval_count(engine: Engine) -> None:
    with_image = engine.generate(VISION, "Describe it.", images=[RED], options=OPTS)
    # the context holds the text tokens and the reply, never stand-ins for the image's positions
    text_tokens = len(with_image.context) - with_image.eval_count
    assert with_image.prompt_eval_count == text_tokens + TOKENS_PER_IMAGE
    two = engine.generate(VISION, "Describe them.", images=[RED, BLUE], options=OPTS)
    assert two.prompt_eval_count == len(two.context) - two.eval_count + 2 * TOKENS_PER_IMAGE


def test_same_image_same_answer_different_image_different_answer_under_one_seed(engine: Engine) -> None:
    red = ask(engine, RED, num_predict=8).message.content
    assert ask(engine, RED, num_predict=8).message.content == red
    assert ask(engine, BLUE, num_predict=8).message.content != red
    assert ask(engine, num_predict=8).message.content != red  # and without an image, another answer again


def test_an_image_is_read_from_a_path_bytes_base64_a_pil_image_or_a_figure(engine: Engine, tmp_path: Path) -> None:
    path = tmp_path / "red.png"
    path.write_bytes(RED)
    expected = ask(engine, RED).message.content
    # every form gives the same file bytes (tests/unit/test_images.py); two of them end to end here
    for form in (str(path), Image.open(io.BytesIO(RED))):
        assert ask(engine, form).message.content == expected, type(form).__name__
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1, 1), dpi=48)
    figure.add_subplot().plot([0, 1], [1, 0])
    assert ask(engine, figure).prompt_eval_count > TOKENS_PER_IMAGE


def test_several_images_in_one_message_and_across_messages(engine: Engine) -> None:
    messages = [
        {"role": "user", "content": "First [img] then this one.", "images": [RED, BLUE]},
        {"role": "assistant", "content": "Two squares."},
        {"role": "user", "content": "And this?", "images": [RED]},
    ]
    rendered = engine.chat(VISION, messages, debug_render_only=True)
    assert rendered.debug_info.image_count == 3
    text = rendered.debug_info.rendered_template
    assert "<__media__>First <__media__> then this one." in text  # Ollama's placement: [img], then in front
    answer = engine.chat(VISION, messages, options=OPTS)
    assert answer.done and answer.prompt_eval_count > 3 * TOKENS_PER_IMAGE


def test_turn_two_after_an_image_reuses_the_cached_image_and_text(engine: Engine) -> None:
    history = [{"role": "user", "content": "Look at this and tell me a story about it.", "images": [BLUE]}]
    options = {"num_ctx": 1024, "num_predict": 6, "temperature": 0}  # unseeded: seeded jobs start from scratch
    first = engine.chat(VISION, history, options=options)
    [entry] = [e for e in engine.scheduler.loaded() if e.name == "tiny-vision:latest"]
    history += [{"role": "assistant", "content": first.message.content}, {"role": "user", "content": "Shorter."}]
    before = entry.runner.tokens_decoded
    second = engine.chat(VISION, history, options=options)
    evaluated = entry.runner.tokens_decoded - before
    assert evaluated < second.prompt_eval_count - first.prompt_eval_count + 8  # the image was not encoded again


def test_bad_images_are_clear_400s(engine: Engine) -> None:
    from ollama_magic.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match=r"^illegal base64 data at input byte 4$"):
        ask(engine, "abcd!efg")
    with pytest.raises(InvalidRequest, match="image 2 is not a valid image"):
        ask(engine, RED, b"this is not an image")
    with pytest.raises(InvalidRequest, match="too many images: 17 in one request, at most 16"):
        ask(engine, *[RED] * 17)
    with pytest.raises(InvalidRequest, match="image file /no/such/picture.png does not exist"):
        ask(engine, "/no/such/picture.png")
    with pytest.raises(InvalidRequest, match=f"^{NO_VISION}$"):
        engine.chat(TEXT_ONLY, [{"role": "user", "content": "hi", "images": [RED]}])
    with pytest.raises(InvalidRequest, match=NO_VISION):
        engine.generate(TEXT_ONLY, "hi", images=[RED])
    with pytest.raises(InvalidRequest, match="more than the context holds"):
        ask(engine, *[RED] * 16, num_ctx=64)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 1e6


def test_memory_is_returned_after_image_requests_and_unloads(vision_store: ModelStore) -> None:
    with Engine(vision_store) as engine:
        options = {**OPTS, "num_predict": 1}
        for _ in range(2):  # warm-up: allocator arenas and caches settle
            engine.chat(VISION, [{"role": "user", "content": "hi", "images": [RED]}], keep_alive=0, options=options)
        baseline = _rss_mb()
        for _ in range(5):
            engine.chat(VISION, [{"role": "user", "content": "hi", "images": [RED, BLUE]}], keep_alive=0,
                        options=options)
        deadline = time.monotonic() + 10
        while engine.ps().models and time.monotonic() < deadline:  # keep_alive=0 unloads after the reply
            time.sleep(0.05)
        assert engine.ps().models == []
        # leaking the text model (98 MB of weights) or its KV cache (94 MB) once per cycle would add 500 MB
        assert _rss_mb() - baseline < 150


# ---- over HTTP, with the official clients --------------------------------------------------------


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[BackgroundServer]:
    srv = BackgroundServer(engine, port=0)
    srv.start()
    yield srv
    srv.stop()


def test_ollama_client_sends_images_by_path_and_bytes(server: BackgroundServer, tmp_path: Path, engine: Engine) -> None:
    path = tmp_path / "red.png"
    path.write_bytes(RED)
    client = ollama.Client(host=server.url)
    expected = ask(engine, RED).message.content
    by_path = client.chat(VISION, [{"role": "user", "content": "What is in the picture?", "images": [str(path)]}],
                          options=OPTS)
    assert by_path.message.content == expected
    generated = client.generate(VISION, "Describe it.", images=[RED], options=OPTS)
    assert generated.prompt_eval_count == len(generated.context) - generated.eval_count + TOKENS_PER_IMAGE
    with pytest.raises(ollama.ResponseError) as refused:
        client.chat(TEXT_ONLY, [{"role": "user", "content": "hi", "images": [RED]}])
    assert refused.value.status_code == 400 and refused.value.error == NO_VISION


def test_http_refuses_bad_base64_and_never_reads_server_paths(server: BackgroundServer, tmp_path: Path) -> None:
    path = tmp_path / "red.png"
    path.write_bytes(RED)
    for image, error in (("abcd!efg", "illegal base64 data at input byte 4"), (str(path), "illegal base64 data")):
        answer = requests.post(f"{server.url}/api/chat", json={
            "model": VISION, "stream": False, "messages": [{"role": "user", "content": "hi", "images": [image]}]})
        assert answer.status_code == 400 and answer.json()["error"].startswith(error)


def test_openai_client_image_url_data_urls_and_http_urls_refused(server: BackgroundServer, engine: Engine) -> None:
    oai = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    data_url = "data:image/png;base64," + base64.b64encode(RED).decode()
    content = [{"type": "text", "text": "What is in the picture?"}, {"type": "image_url", "image_url": {"url": data_url}}]
    done = oai.chat.completions.create(model=VISION, messages=[{"role": "user", "content": content}],
                                       max_tokens=8, seed=7)
    assert done.usage.prompt_tokens > TOKENS_PER_IMAGE and done.choices[0].message.content is not None
    with pytest.raises(openai.BadRequestError, match="image URLs are not currently supported"):
        oai.chat.completions.create(model=VISION, max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])


# ---- the fixture's own command ---------------------------------------------------------------------


def test_setup_tiny_vision_registers_it_and_a_bare_setup_leaves_it_out(clone_registered, tmp_path: Path) -> None:
    store = clone_registered(tmp_path / "models")
    env = {**os.environ, "OLLAMA_MODELS": str(store.root)}

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "ollama_magic", *args], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("setup")
    assert not store.exists(VISION)
    cli("setup", "tiny-vision")
    assert store.exists(VISION)
    shown = cli("show", VISION)
    assert "Projector" in shown and "clip" in shown
    assert "plumbing fixture" in shown and "vision" in shown


# ---- the notebook ------------------------------------------------------------------------------------


def test_chat_image_flag_takes_paths_and_variables_and_the_thread_keeps_images_by_digest(
        notebook_shell, vision_store: ModelStore, tmp_path: Path) -> None:
    import hashlib

    from IPython.core.error import UsageError
    from IPython.utils.capture import capture_output

    ip = notebook_shell(vision_store.root)
    path = tmp_path / "red.png"
    path.write_bytes(RED)
    ip.user_ns["picture"] = Image.open(io.BytesIO(BLUE))
    with capture_output():
        first = ip.run_cell_magic("chat", f"-m {VISION} --seed 7 --num-predict 6 --image {path}", "What is this?")
        second = ip.run_cell_magic("chat", f"-m {VISION} --seed 7 --num-predict 6 --image picture", "And this?")
    assert first.stats["prompt_eval_count"] > TOKENS_PER_IMAGE
    # turn 2 resends turn 1's image from the thread's files: two images' tokens, and more
    assert second.stats["prompt_eval_count"] > first.stats["prompt_eval_count"] + TOKENS_PER_IMAGE
    session = ip.magics_manager.registry["OllamaMagics"].session
    store, identity = session.conversations, session.identity
    document = json.loads(store.path_for(identity).read_text())
    users = [m for m in document["threads"]["main"] if m["role"] == "user"]
    assert users[0]["images"] == ["sha256:" + hashlib.sha256(RED).hexdigest()]
    assert len(users[1]["images"]) == 1 and "base64" not in store.path_for(identity).read_text()
    stored = {p.name for p in store.images_dir(identity).iterdir()}
    assert stored == {d.replace(":", "-") for u in users for d in u["images"]}
    with pytest.raises(UsageError, match="no notebook variable and no file"):
        ip.run_cell_magic("chat", f"-m {VISION} --image nothing_here", "Hi")


# ---- stores and creates -------------------------------------------------------------------------------


def test_a_manifest_ollama_wrote_with_a_projector_layer_runs_images_unchanged(
        vision_store: ModelStore, tmp_path: Path, smollm2_gguf: Path) -> None:
    """``ollama pull llava`` leaves a model layer and a projector layer; such a store is run in place."""
    root = ollama_pulled_store(tmp_path / "ollama", smollm2_gguf)
    projector = vision_store.find(VISION).projector_paths[0]
    digest, size = _blob(root / "blobs", link=projector)
    path = root / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m"
    manifest = json.loads(path.read_bytes())
    manifest["layers"].insert(1, {"mediaType": "application/vnd.ollama.image.projector", "digest": digest, "size": size})
    path.write_bytes(json.dumps(manifest, separators=(",", ":")).encode())
    with Engine(ModelStore(root)) as engine:
        assert "vision" in engine.show("smollm2:135m").capabilities
        answer = engine.chat("smollm2:135m", [{"role": "user", "content": "What is it?", "images": [RED]}],
                             options=OPTS)
        assert answer.prompt_eval_count > TOKENS_PER_IMAGE


def test_api_create_with_a_projector_in_files_makes_a_vision_model(server: BackgroundServer,
                                                                   vision_store: ModelStore) -> None:
    client = ollama.Client(host=server.url)
    record = vision_store.find(VISION)
    model = "sha256:" + record.model_path.name.removeprefix("sha256-")
    projector = "sha256:" + record.projector_paths[0].name.removeprefix("sha256-")
    client.create("made-over-http", files={"model.gguf": model, "mmproj.gguf": projector})
    shown = client.show("made-over-http")
    assert "vision" in shown.capabilities
    assert requests.post(f"{server.url}/api/show", json={"model": "made-over-http"}).json()[
        "projector_info"]["clip.projector_type"] == "idefics3"
    client.delete("made-over-http")


def test_a_modelfile_with_a_second_from_makes_a_vision_model(engine: Engine, tmp_path: Path,
                                                            smollm2_gguf: Path) -> None:
    from ollama_magic.tiny_vision import write_projector

    projector = write_projector(tmp_path / "mmproj-tiny.gguf")
    engine.create("two-froms", modelfile=f"FROM {smollm2_gguf}\nFROM {projector}\n", base_dir=tmp_path)
    try:
        assert "vision" in engine.show("two-froms").capabilities
        rendered = engine.chat("two-froms", [{"role": "user", "content": "hi", "images": [RED]}],
                               debug_render_only=True)
        assert rendered.debug_info.image_count == 1
    finally:
        engine.delete("two-froms")


def test_chat_panel_sends_uploaded_images_and_the_thread_keeps_them(vision_store: ModelStore, tmp_path: Path) -> None:
    from ollama_magic.notebook.conversations import ConversationStore
    from ollama_magic.notebook.session import NotebookSession
    from ollama_magic.notebook.widgets import ChatPanel

    with Engine(vision_store) as engine:
        session = NotebookSession(shell=None, engine=engine, conversations=ConversationStore(tmp_path / "conv"))
        session.identity  # see test_widgets_chat's session fixture: look the identity up before any widget
        chat = ChatPanel(session)
        try:
            chat.model.value = "tiny-vision:latest"
            chat.num_predict.value, chat.seed.value = "6", "7"
            chat.images.value = ({"name": "red.png", "type": "image/png", "size": len(RED), "content": memoryview(RED),
                                  "last_modified": 0},)
            chat.message.value = "What is this?"
            chat.send_button.click()
            assert chat.wait(180)
            assert chat.status.kind == "ok", chat.status.text
            [user, reply] = session.conversations.thread(session.identity, "main")
            assert len(user["images"]) == 1 and reply["prompt_eval_count"] > TOKENS_PER_IMAGE
            assert chat.images.value == () and "with 1 image" in chat.history.value
        finally:
            chat.close()
