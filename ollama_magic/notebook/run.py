"""``python -m ollama_magic.notebook.run NOTEBOOK``: execute a notebook headlessly (a real Jupyter
kernel, via nbclient) and print each cell with its text output, as a terminal transcript.

This is how ``make demo`` shows the quickstart without a browser; ``--save`` also writes the executed
notebook back.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def text_of(output: Any) -> str:
    if output.get("output_type") == "stream":
        return output.get("text", "")
    if output.get("output_type") == "error":
        return "\n".join([f"{output.get('ename')}: {output.get('evalue')}"])
    data = output.get("data", {})
    if any(k.startswith("image/") for k in data):
        return "[image]"
    for kind in ("text/markdown", "text/plain"):
        if kind in data and str(data[kind]).strip():
            return str(data[kind])
    return ""


def transcript(notebook: Any) -> str:
    lines: list[str] = []
    for number, cell in enumerate(notebook.cells, 1):
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.startswith("# NBVAL_"))
        lines.append(f"In [{number}]: " + source.replace("\n", "\n        "))
        shown: list[str] = []
        previous_stream = None
        for output in cell.get("outputs", []):
            text = text_of(output)
            if output.get("output_type") == "stream" and previous_stream == output.get("name") and shown:
                shown[-1] += text  # consecutive prints are one text, as a terminal shows them
            elif text.strip():
                shown.append(text)
            previous_stream = output.get("name") if output.get("output_type") == "stream" else None
        if shown:
            lines.append("\n".join(s.rstrip() for s in shown))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--save", action="store_true", help="write the executed notebook back")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    notebook = nbformat.read(args.notebook, as_version=4)
    # What Jupyter tells its kernels: the notebook's path, so %%chat keeps this notebook's own threads.
    os.environ["JPY_SESSION_NAME"] = str(args.notebook.resolve())
    client = NotebookClient(notebook, timeout=args.timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(args.notebook.parent.resolve())}})
    try:
        client.execute()
        failed = False
    except CellExecutionError as exc:
        print(str(exc).splitlines()[-1], file=sys.stderr)
        failed = True
    print(transcript(notebook))
    if args.save and not failed:
        nbformat.write(notebook, args.notebook)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
