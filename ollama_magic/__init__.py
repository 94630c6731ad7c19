"""ollama-magic: a local LLM workstation inside a Jupyter kernel, speaking Ollama's API."""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import InvalidRequest, ModelNotFound, OllamaMagicError  # noqa: E402
from .names import ModelName, normalize  # noqa: E402
from .store import Modelfile, ModelStore, parse_modelfile  # noqa: E402

__all__ = [
    "InvalidRequest",
    "ModelName",
    "ModelNotFound",
    "ModelStore",
    "Modelfile",
    "OllamaMagicError",
    "__version__",
    "normalize",
    "parse_modelfile",
]
