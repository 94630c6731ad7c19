"""Image inputs without a model: what a caller may hand in, Ollama's placement rule, its error texts,
and the tiny-vision projector as the store sees it."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from ollama_magic.engine.capabilities import capabilities
from ollama_magic.engine.images import (MEDIA_MARKER, data_url_payload, decode, from_base64, image_bytes, pictures,
                                        tag_content)
from ollama_magic.errors import InvalidRequest
from ollama_magic.formatting import show_sections
from ollama_magic.store import ModelStore
from ollama_magic.tiny_vision import write_projector


def _png(size: tuple[int, int] = (5, 3), color: tuple[int, int, int] = (1, 2, 3), fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


def test_every_accepted_form_gives_the_same_file_bytes(tmp_path: Path) -> None:
    data = _png()
    path = tmp_path / "a.png"
    path.write_bytes(data)
    pil = Image.open(io.BytesIO(data))
    for value in (data, bytearray(data), str(path), path, base64.b64encode(data).decode()):
        assert image_bytes(value) == data
    assert decode(image_bytes(pil)).rgb == decode(data).rgb  # re-encoded as PNG: the same pixels


def test_pictures_hold_rgb_pixels_and_the_file_digest() -> None:
    import hashlib

    data = _png((4, 2), (10, 20, 30))
    [picture] = pictures([data])
    assert (picture.width, picture.height) == (4, 2) and picture.rgb == bytes([10, 20, 30]) * 8
    assert picture.digest == hashlib.sha256(data).hexdigest()


def test_webp_is_read_although_llama_cpp_cannot_decode_it() -> None:
    [picture] = pictures([_png((6, 6), fmt="WEBP")])
    assert (picture.width, picture.height) == (6, 6)


def test_bad_base64_is_refused_in_gos_words() -> None:
    with pytest.raises(InvalidRequest, match=r"^illegal base64 data at input byte 3$"):
        from_base64("abc$def")
    with pytest.raises(InvalidRequest, match="illegal base64 data"):
        from_base64("abc")  # missing padding, as Go's StdEncoding refuses it
    assert from_base64(base64.b64encode(b"xyz").decode()) == b"xyz"


def test_non_images_too_many_images_and_missing_files_are_clear() -> None:
    with pytest.raises(InvalidRequest, match="image 2 is not a valid image"):
        pictures([_png(), b"plain text"])
    with pytest.raises(InvalidRequest, match="too many images: 17 in one request, at most 16"):
        pictures([_png()] * 17)
    with pytest.raises(InvalidRequest, match="does not exist"):
        image_bytes("/no/such/cat.jpg")
    with pytest.raises(InvalidRequest, match="not int"):
        image_bytes(3)


def test_the_image_limit_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MAGIC_MAX_IMAGES", "2")
    with pytest.raises(InvalidRequest, match="3 in one request, at most 2"):
        pictures([_png()] * 3)


def test_placement_follows_ollama_img_placeholders_then_the_front() -> None:
    assert tag_content("What is this?", 1) == f"{MEDIA_MARKER}What is this?"
    assert tag_content("Compare [img] with this.", 2) == f"{MEDIA_MARKER}Compare {MEDIA_MARKER} with this."
    assert tag_content("", 2) == MEDIA_MARKER * 2


def test_openai_image_urls_must_be_base64_data_urls() -> None:
    assert data_url_payload("data:image/png;base64,QUJD") == "QUJD"
    with pytest.raises(InvalidRequest, match="image URLs are not currently supported, please use base64"):
        data_url_payload("https://example.com/cat.png")
    with pytest.raises(InvalidRequest, match="must be base64"):
        data_url_payload("data:image/png,rawbytes")


def test_the_tiny_vision_projector_is_a_projector_layer_with_projector_info(store: ModelStore, tiny_gguf: Path,
                                                                            tmp_path: Path) -> None:
    projector = write_projector(tmp_path / "mmproj.gguf")
    assert write_projector(tmp_path / "again.gguf").read_bytes() == projector.read_bytes()  # seeded: same bytes
    for _ in store.create("seeing", f"FROM {tiny_gguf}\nFROM {projector}"):
        pass
    record = store.find("seeing")
    assert capabilities(record) == ["completion", "vision"]
    shown = store.show_record(record)
    assert shown.projector_info["clip.projector_type"] == "idefics3"
    assert shown.projector_info["general.architecture"] == "clip"
    assert shown.projector_info["clip.vision.image_mean"] == pytest.approx([0.5, 0.5, 0.5])
    sections = dict(show_sections(shown.model_copy(update={"capabilities": capabilities(record)})))
    assert dict(sections["Projector"])["dimensions"] == "576"
    assert "plumbing fixture" in dict(sections["Projector"])["description"]
    for _ in store.create("blind", f"FROM {tiny_gguf}"):
        pass
    assert store.show("blind").projector_info is None
