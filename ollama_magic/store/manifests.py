"""Manifests and layers in Ollama's exact on-disk format.

Ollama writes these with Go's ``encoding/json`` Encoder: compact, struct field order, ``<``/``>``/``&``
escaped as ``\\u003c``..., and a trailing newline. We write the same bytes, so a manifest (and its
digest, which is what ``ollama list`` shows as ID) is the same whichever program wrote it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .. import gofmt

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
_PREFIX = "application/vnd.ollama.image."
MODEL = _PREFIX + "model"
ADAPTER = _PREFIX + "adapter"
PROJECTOR = _PREFIX + "projector"
TEMPLATE = _PREFIX + "template"
LEGACY_PROMPT = _PREFIX + "prompt"
SYSTEM = _PREFIX + "system"
PARAMS = _PREFIX + "params"
MESSAGES = _PREFIX + "messages"
LICENSE = _PREFIX + "license"


def go_json(value: Any) -> bytes:
    """Serialise like Go's ``json.NewEncoder(w).Encode(v)``: ``json.Marshal`` plus a newline."""
    return (gofmt.go_json(value) + "\n").encode("utf-8")


def go_json_sorted(value: Any) -> bytes:
    """For Go maps (params), whose keys Go's encoder sorts."""
    return go_json(json.loads(json.dumps(value, sort_keys=True)))


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    size: int
    from_: str = ""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.from_:
            data["from"] = self.from_
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Layer":
        return cls(str(data["mediaType"]), str(data["digest"]), int(data.get("size", 0)), str(data.get("from", "")))


@dataclass(frozen=True)
class Manifest:
    config: Layer
    layers: tuple[Layer, ...]

    def to_bytes(self) -> bytes:
        return go_json(
            {
                "schemaVersion": 2,
                "mediaType": MANIFEST_MEDIA_TYPE,
                "config": self.config.to_json(),
                "layers": [layer.to_json() for layer in self.layers],
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> "Manifest":
        doc = json.loads(data)
        return cls(Layer.from_json(doc["config"]), tuple(Layer.from_json(x) for x in doc.get("layers") or []))

    def layer(self, media_type: str) -> Layer | None:
        return next((layer for layer in self.layers if layer.media_type == media_type), None)

    def layers_of(self, media_type: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.media_type == media_type]

    @property
    def digests(self) -> set[str]:
        return {self.config.digest, *(layer.digest for layer in self.layers)}

    @property
    def size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)
