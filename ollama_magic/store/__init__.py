"""What lives on disk: blobs, manifests, Modelfiles and GGUF metadata, in Ollama's layout."""

from .gguf_meta import GGUFInfo, read_gguf
from .modelfile import Modelfile
from .modelfile import parse as parse_modelfile
from .store import ModelRecord, ModelStore, default_root

__all__ = ["GGUFInfo", "Modelfile", "ModelRecord", "ModelStore", "default_root", "parse_modelfile", "read_gguf"]
