"""Images a request carries, from whatever the caller holds to decoded RGB pixels.

Over HTTP an image is base64 text (Ollama's ``images``; OpenAI's ``data:`` URLs are unwrapped by the
/v1 route). From Python it may also be a path, bytes, a PIL image, a matplotlib figure or an
``ollama.Image``, as the ``ollama`` client accepts. Every one becomes a :class:`Picture` here, in the
caller's thread, so a bad image is a 400 before anything is queued. Pixels are decoded by Pillow (so
WebP works, which llama.cpp's stb_image cannot read) and handed to libmtmd as raw RGB.

Where an image goes in the prompt is Ollama's rule (``imageTaggedMessages`` in ``server/prompt.go``):
the first ``[img]`` in the message text, else in front of the text, one marker per image.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .. import envconfig
from ..errors import InvalidRequest

#: libmtmd's default media marker (``mtmd_default_marker()``); the projector is opened with it
MEDIA_MARKER = "<__media__>"
#: Ollama's own in-text placeholder: the first one in a message is where its image goes
OLLAMA_PLACEHOLDER = "[img]"
DEFAULT_MAX_IMAGES = envconfig.max_images.default
#: Ollama's text for images sent to a model without a projector (``model.ErrNoVisionModel``)
NO_VISION = "this model is missing data required for image input"
_BASE64 = re.compile(r"[A-Za-z0-9+/=]")


def max_images() -> int:
    """Images one request may carry (``OLLAMA_MAGIC_MAX_IMAGES``, default 16): each costs an encode
    and its tokens in the context, so a runaway client is refused instead of filling the KV cache."""
    return envconfig.max_images()


@dataclass(frozen=True)
class Picture:
    """One decoded image: RGB bytes, row-major, and the sha256 of the file it came from (its
    identity in the KV cache and in stored threads)."""

    width: int
    height: int
    rgb: bytes
    digest: str


def from_base64(text: str) -> bytes:
    """Standard base64 (padding required, no ``data:`` prefix), as Ollama's JSON binding reads it;
    a bad one is a 400 in Go's words."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"illegal base64 data at input byte {_first_bad_byte(text)}") from None


def _first_bad_byte(text: str) -> int:
    for i, char in enumerate(text):
        if not _BASE64.match(char) or (char == "=" and text[i:].strip("=")):
            return i
    return max(0, len(text) - len(text) % 4)


def image_bytes(value: Any) -> bytes:
    """The encoded file behind one image value (see the module docstring for what is accepted)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, Path):
        return _read(value)
    if isinstance(value, str):
        if len(value) < 4096 and not value.startswith("data:"):
            try:
                path = Path(value).expanduser()
                if path.is_file():
                    return _read(path)
            except (OSError, ValueError):
                pass
            if value.rsplit(".", 1)[-1].lower() in ("png", "jpg", "jpeg", "webp", "gif", "bmp"):
                raise InvalidRequest(f"image file {value} does not exist")
        return from_base64(value)
    inner = getattr(value, "value", None)
    if inner is not None and type(value).__name__ == "Image" and type(value).__module__.startswith("ollama"):
        return image_bytes(inner)  # ollama.Image(value=...)
    if hasattr(value, "savefig"):  # a matplotlib Figure
        buffer = io.BytesIO()
        value.savefig(buffer, format="png")
        return buffer.getvalue()
    if hasattr(value, "save") and hasattr(value, "mode") and hasattr(value, "size"):  # a PIL image
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return buffer.getvalue()
    raise InvalidRequest(f"an image must be base64 text, a path, bytes, a PIL image or a matplotlib figure, "
                         f"not {type(value).__name__}")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"cannot read image {path}: {exc.strerror or exc}") from None


def decode(data: bytes, index: int = 0) -> Picture:
    """Pixels of an encoded image; anything Pillow cannot open is a 400 naming which image it was."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        reason = "not an image file Pillow can read" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise InvalidRequest(f"image {index + 1} is not a valid image: {reason}") from None
    return Picture(rgb.width, rgb.height, rgb.tobytes(), hashlib.sha256(data).hexdigest())


def pictures(values: Sequence[Any]) -> list[Picture]:
    """Decode every image of a request, refusing more than :func:`max_images`."""
    encoded = [image_bytes(v) for v in values]  # bad base64 first, as Ollama's binding does
    limit = max_images()
    if len(encoded) > limit:
        raise InvalidRequest(f"too many images: {len(encoded)} in one request, at most {limit} "
                             "(OLLAMA_MAGIC_MAX_IMAGES)")
    return [decode(data, i) for i, data in enumerate(encoded)]


def tag_content(content: str, count: int) -> str:
    """Ollama's placement: each image takes the next ``[img]`` in the text, or goes in front of it."""
    prefix = ""
    for _ in range(count):
        if OLLAMA_PLACEHOLDER in content:
            content = content.replace(OLLAMA_PLACEHOLDER, MEDIA_MARKER, 1)
        else:
            prefix += MEDIA_MARKER
    return prefix + content


def data_url(value: Any) -> str:
    """An image as an OpenAI ``image_url`` data URL (for OpenAI-compatible servers)."""
    from PIL import Image, UnidentifiedImageError

    data = image_bytes(value)
    try:
        with Image.open(io.BytesIO(data)) as img:
            mime = Image.MIME.get(img.format or "", "image/png")
    except (UnidentifiedImageError, OSError):
        raise InvalidRequest("an image to send is not a valid image file") from None
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def data_url_payload(url: str) -> str:
    """The base64 text of an OpenAI ``image_url`` (Ollama's rule: ``data:`` URLs only)."""
    if not url.startswith("data:"):
        raise InvalidRequest("image URLs are not currently supported, please use base64 encoded data instead")
    head, sep, payload = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise InvalidRequest("invalid image input: a data URL must be base64 (data:image/png;base64,...)")
    return payload


__all__ = ["MEDIA_MARKER", "NO_VISION", "Picture", "data_url", "data_url_payload", "decode", "from_base64", "image_bytes",
           "max_images", "pictures", "tag_content"]
