"""What ``%ollama learn`` reads, as :class:`Source` objects: a name, a kind, a digest of its content and
its texts, each with the position a citation names (a line range, a notebook cell, a table row, a PDF
page, a DataFrame index, a cell number).

Readers by suffix: text files (``.md .txt .rst .py`` and any other UTF-8 text), ``.ipynb`` (each
cell's source and its text outputs), ``.csv``/``.parquet`` (the text columns: every string column, or
the ones named), ``.pdf`` (each page's text, through pypdf). A source's digest covers its bytes and
the options that change its chunks, so learning an unchanged source again costs nothing.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidRequest

TEXT_SUFFIXES = (".md", ".markdown", ".txt", ".rst", ".py")
TABLE_SUFFIXES = (".csv", ".parquet")

#: kinds of source, as the index stores them
FILE, FRAME, CELL = "file", "frame", "cell"


@dataclass(frozen=True)
class Passage:
    """One text of a source and where it sits: ``position`` is what a citation names besides the line
    range ("cell 3", "row 17", "p. 2", a DataFrame index label), "" for a plain file."""

    text: str
    position: str = ""
    first_line: int = 1


@dataclass
class Source:
    name: str
    kind: str
    passages: list[Passage] = field(default_factory=list)
    digest: str = ""


def digest_of(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\x00")
    return h.hexdigest()


def expand(patterns: Sequence[str]) -> list[Path]:
    """Paths and globs (``**`` included) to the files they name, each once, in order; a pattern that
    names nothing is an error (a typo should not learn nothing silently)."""
    found: dict[Path, None] = {}
    for pattern in patterns:
        expanded = Path(pattern).expanduser()
        matches = sorted(glob.glob(str(expanded), recursive=True)) if glob.has_magic(pattern) else [str(expanded)]
        files = [Path(m).resolve() for m in matches if Path(m).is_file()]
        if not files:
            raise InvalidRequest(f"{pattern}: no such file" if not glob.has_magic(pattern) else
                                 f"{pattern}: matches no file")
        found.update(dict.fromkeys(files))
    return list(found)


def read_file(path: Path, *, columns: Sequence[str] | None = None) -> Source:
    """One file as a source named by its absolute path."""
    data = path.read_bytes()
    suffix = path.suffix.lower()
    digest = digest_of(FILE, data, ",".join(columns or []))
    if suffix == ".ipynb":
        passages = _notebook(data, path)
    elif suffix in TABLE_SUFFIXES:
        passages = _table(path, columns)
    elif suffix == ".pdf":
        passages = _pdf(path)
    else:
        try:
            passages = [Passage(data.decode("utf-8"))]
        except UnicodeDecodeError:
            raise InvalidRequest(f"{path}: not UTF-8 text (learn reads {', '.join(TEXT_SUFFIXES)}, .ipynb, .csv, "
                                 ".parquet and .pdf)") from None
    return Source(str(path), FILE, passages, digest)


def _notebook(data: bytes, path: Path) -> list[Passage]:
    try:
        cells = json.loads(data)["cells"]
    except (ValueError, KeyError, TypeError):
        raise InvalidRequest(f"{path}: not a Jupyter notebook") from None
    passages = []
    for number, cell in enumerate(cells, start=1):
        text = _joined(cell.get("source"))
        outputs = [_output_text(o) for o in cell.get("outputs") or []]
        text = "\n".join([text, *(o for o in outputs if o)])
        if text.strip():
            passages.append(Passage(text, f"cell {number}"))
    return passages


def _output_text(output: dict[str, Any]) -> str:
    if output.get("output_type") == "stream":
        return _joined(output.get("text"))
    return _joined((output.get("data") or {}).get("text/plain"))


def _joined(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def _table(path: Path, columns: Sequence[str] | None) -> list[Passage]:
    import pandas as pd

    frame = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    return [Passage(text, f"row {index}") for index, text in _rows(frame, columns, str(path))]


def _rows(frame: Any, columns: Sequence[str] | None, what: str) -> Iterable[tuple[Any, str]]:
    """Each row's text columns as one text (``column: value`` lines when there are several)."""
    if columns:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise InvalidRequest(f"{what}: no column {missing[0]!r} (columns: {', '.join(map(str, frame.columns))})")
        chosen = list(columns)
    else:
        import pandas as pd

        chosen = [c for c in frame.columns if frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c])]
        if not chosen:
            raise InvalidRequest(f"{what}: no text column; name them with --columns a,b")
    for index, row in frame[chosen].iterrows():
        values = [(c, v) for c, v in row.items() if isinstance(v, str) and v.strip()]
        if values:
            yield index, values[0][1] if len(chosen) == 1 else "\n".join(f"{c}: {v}" for c, v in values)


def _pdf(path: Path) -> list[Passage]:
    try:
        from pypdf import PdfReader
    except ImportError:
        raise InvalidRequest("reading PDF needs pypdf: pip install pypdf") from None
    try:
        reader = PdfReader(path)
        return [Passage(page.extract_text() or "", f"p. {n}") for n, page in enumerate(reader.pages, start=1)]
    except Exception as exc:  # noqa: BLE001 - pypdf's errors are many; one line names the file
        raise InvalidRequest(f"{path}: cannot read this PDF ({type(exc).__name__}: {exc})") from None


def from_column(name: str, values: Any) -> Source:
    """A DataFrame column (or Series, or list) as one source; each row keeps its index label."""
    import pandas as pd

    series = values if isinstance(values, pd.Series) else pd.Series(values)
    if isinstance(values, pd.DataFrame):
        raise InvalidRequest(f"--over {name} is a DataFrame: name one column (df.col or df['col'])")
    passages = [Passage(str(v), repr(i) if not isinstance(i, str) else i) for i, v in series.items()
                if isinstance(v, str) and v.strip()]
    if not passages:
        raise InvalidRequest(f"--over {name}: no text in it")
    digest = digest_of(FRAME, json.dumps([[p.position, p.text] for p in passages], ensure_ascii=False))
    return Source(name, FRAME, passages, digest)


def from_cells(name: str, cells: Iterable[tuple[int | None, str]]) -> Source:
    """Executed cells (number, text with its output) as one source, each passage naming its cell."""
    passages = [Passage(text, f"cell {n}" if n is not None else "cell") for n, text in cells if text.strip()]
    if not passages:
        raise InvalidRequest("--cells: no executed cell to learn yet")
    digest = digest_of(CELL, json.dumps([[p.position, p.text] for p in passages], ensure_ascii=False))
    return Source(name, CELL, passages, digest)


def cite(source: str, kind: str, position: str, first_line: int, last_line: int) -> str:
    """How a chunk is named in a sources list: ``README.md:12-30``, ``nb.ipynb cell 3``, ``df.text[17]``,
    ``cell 5``, ``data.csv row 4``; a file near the working directory by its relative path (``relative``)."""
    if kind == FRAME:
        return f"{source}[{position}]"
    if kind == CELL:
        return position
    shown = relative(source)
    if position:
        return f"{shown} {position}"
    return f"{shown}:{first_line}" if first_line == last_line else f"{shown}:{first_line}-{last_line}"


#: how far up from the working directory a shown path may climb (``../README.md``) before it is shown whole
MAX_PARENT_STEPS = 2


def relative(source: str) -> str:
    """How a table shows a learned file: relative to the working directory when it is near (a notebook
    in ``notebooks/`` learning ``../README.md``), else whole, so a shared index stays readable."""
    try:
        shown = os.path.relpath(source, Path.cwd())
    except ValueError:  # another drive on Windows
        return source
    return shown if shown.split(os.sep)[:MAX_PARENT_STEPS + 1].count(os.pardir) <= MAX_PARENT_STEPS else source


__all__ = ["CELL", "FILE", "FRAME", "Passage", "Source", "cite", "digest_of", "expand", "from_cells", "from_column",
           "read_file", "relative"]
