"""Run every benchmark in bench/ and print its table."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

SCRIPTS = ["engine_decode.py", "http_stream.py", "embed_frame.py", "concurrency.py", "memory.py", "chat_over.py",
           "column_cache.py", "registry_pull.py", "logprobs_cost.py", "kv_cache.py", "plan_accuracy.py", "step_host.py",
           "seeded_batching.py", "prefix_share.py"]

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))  # the scripts import their sibling _models.py
    for name in SCRIPTS:
        print(f"== {name}", flush=True)
        sys.argv = [name]
        runpy.run_path(str(Path(__file__).parent / name), run_name="__main__")
