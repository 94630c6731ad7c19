"""Label probabilities in the notebook: ``%%chat --choices a,b`` on one text, ``--over col --choices a,b``
on a column, and ``chat_over(values, prompt, choices=[...])``.

Every number comes from the session's Backend (``classify``: the in-kernel engine, or an ollama-magic
server's /api/classify); this module only asks and lays the answers out. A label's probability is read
from the logits (see ``engine/choices.py``), so nothing here samples or parses a reply. None of these
turns enters the notebook's conversation threads.
"""

from __future__ import annotations

import html
import re
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import pandas as pd

from ..errors import InvalidRequest, NotSupported, RowError, RowInterrupted
from ..store.column_cache import cache_key, keyed_options
from ..types import ClassifyResponse
from .memo import ColumnMemo, open_memo
from .rows import drain, row_error, row_messages

if TYPE_CHECKING:
    from ..backends import Backend

#: One label of ``--choices``: "double" or 'single' quoted (may hold commas and spaces), or bare up to a comma.
_LABEL = re.compile(r"""\s*(?:"([^"]*)"|'([^']*)'|([^,]*?))\s*(,|$)""")
BAR_WIDTH = 20  # characters of the plain-text bar of a probability of 1
BAR_PIXELS = 160  # pixels of the HTML bar of a probability of 1


def parse_labels(text: str) -> list[str]:
    """``positive,negative, neutral`` -> the labels; a quoted label keeps its commas and spaces
    (``'"yes, surely",no'``). Bare labels lose the spaces around them."""
    labels: list[str] = []
    position = 0
    while True:
        match = _LABEL.match(text, position)  # always matches: a bare label may be empty
        assert match is not None
        double, single, bare, end = match.groups()
        labels.append(next(v for v in (double, single, bare) if v is not None))
        if end != ",":
            return labels
        position = match.end()


def labels_of(choices: str | Iterable[str]) -> list[str]:
    """The labels of ``choices``: a list as given, or a ``--choices`` text (``"a,b,c"``)."""
    return parse_labels(choices) if isinstance(choices, str) else list(choices)


class Classification(ClassifyResponse):
    """A ClassifyResponse that shows itself as a small bar chart (HTML, or text where there is no HTML)."""

    def _rows(self) -> list[tuple[str, float]]:
        return list(self.probabilities.items())

    def bars(self) -> str:
        """The distribution as text: one line per label, its bar and its probability."""
        width = max(len(label) for label, _ in self._rows())
        lines = []
        for label, p in self._rows():
            filled = round(p * BAR_WIDTH)
            mark = "*" if label == self.label else " "
            lines.append(f"{mark} {label:<{width}}  {'█' * filled}{'·' * (BAR_WIDTH - filled)}  {p:6.1%}")
        return "\n".join([*lines, f"  entropy {self.entropy:.3f} nats ({self.model})"])

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.bars())

    def _repr_html_(self) -> str:
        rows = []
        for label, p in self._rows():
            weight = "bold" if label == self.label else "normal"
            rows.append(
                f'<tr><td style="text-align:left;font-weight:{weight}">{html.escape(label)}</td>'
                f'<td style="text-align:left"><div style="display:inline-block;height:0.9em;'
                f'width:{round(p * BAR_PIXELS)}px;background:#4c78a8"></div></td>'
                f'<td style="text-align:right">{p:.1%}</td></tr>')
        return (f'<table class="ollama-magic-choices">{"".join(rows)}</table>'
                f'<div style="font-size:smaller">entropy {self.entropy:.3f} nats ({html.escape(self.model)})</div>')


def classify(text: str, choices: str | Iterable[str], *, model: str | None = None, backend: Backend | None = None,
             system: str | None = None, options: Mapping[str, Any] | None = None) -> Classification:
    """How likely the model finds each of ``choices`` as its reply to ``text`` (a chat message); shown
    as bars in a notebook. ``backend``/``model`` default to the notebook session's."""
    if backend is None or model is None:
        from .session import chat_backend

        backend, model = chat_backend(backend, model)
    result = backend.classify(model, messages=row_messages(system, text), choices=labels_of(choices),
                              options=dict(options) if options else None)
    return Classification.model_validate(result.model_dump())


def classify_rows(backend: Backend, model: str, prompts: list[str | None], index: pd.Index,
                  choices: str | Iterable[str], *, system: str | None = None,
                  options: Mapping[str, Any] | None = None, workers: int = 4, progress: bool = True,
                  cache: bool = True, refresh: bool = False) -> pd.DataFrame:
    """``chat_over(..., choices=...)`` once it has the rows' prompts (None: a missing value): for every
    row the likeliest ``label``, one ``p_<label>`` column per label (in order) and the ``entropy`` (nats),
    on ``index``. Each distinct prompt is asked once, ``workers`` at a time; a failed row holds its error
    in an ``error`` column. Ctrl-C keeps the rows that finished. Rows are kept in the column cache as
    ``--over`` answers are (``cache``/``refresh`` as there): the labels' log probabilities, as float32."""
    labels = labels_of(choices)
    if workers < 1:
        raise InvalidRequest("workers must be at least 1")
    distinct = list(dict.fromkeys(p for p in prompts if p is not None))
    with open_memo(backend, model, cache=cache, refresh=refresh) as memo:
        keys = {prompt: cache_key("choices", memo.identity, messages=row_messages(system, prompt), labels=labels,
                                  options=keyed_options(options)) for prompt in distinct} if memo.active else {}
        found = memo.lookup_vectors(keys)
        answers: dict[str, ClassifyResponse | RowError] = {
            prompt: ClassifyResponse.from_logprobs(model, "", dict(zip(labels, map(float, vector))))
            for prompt, vector in found.items() if len(vector) == len(labels)}
        return _classify(backend, model, prompts, index, labels, distinct, answers, memo, keys, system, options,
                         workers, progress)


def _classify(backend: Backend, model: str, prompts: list[str | None], index: pd.Index, labels: list[str],
              distinct: list[str], answers: dict[str, ClassifyResponse | RowError], memo: ColumnMemo,
              keys: dict[str, str], system: str | None, options: Mapping[str, Any] | None, workers: int,
              progress: bool) -> pd.DataFrame:
    """``classify_rows`` after the cache's lookup: ask the rows ``answers`` lacks, keeping each."""
    cached = len(answers)
    to_ask = [prompt for prompt in distinct if prompt not in answers]

    from tqdm.auto import tqdm

    def ask(prompt: str) -> ClassifyResponse:
        return backend.classify(model, messages=row_messages(system, prompt), choices=labels,
                                options=dict(options) if options else None)

    def finish(future: Future[ClassifyResponse]) -> None:
        prompt = futures[future]
        answer = answers[prompt] = _outcome(future)
        if prompt in keys and isinstance(answer, ClassifyResponse):
            memo.keep_vectors({keys[prompt]: np.array(list(answer.logprobs.values()))})

    interrupted, unfinished = False, 0
    futures: dict[Future[ClassifyResponse], str] = {}
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ollama-magic-choices")
    try:
        with tqdm(total=len(distinct), initial=cached, desc=f"{model} rows", unit="row", disable=not progress,
                  postfix={"cached": cached, "asked": 0}) as bar:
            futures.update({pool.submit(ask, prompt): prompt for prompt in to_ask})
            try:
                drain(futures, finish, bar, cached, lambda: len(answers) - cached)
            except KeyboardInterrupt:
                interrupted = True  # rows no worker picked up are dropped; a running row is one short pass
                for future, prompt in futures.items():
                    if future.done() and not future.cancelled() and prompt not in answers:
                        finish(future)  # finished before Ctrl-C reached the loop: kept, as over.py keeps them
                unfinished = len(distinct) - len(answers)
                for prompt in distinct:
                    answers.setdefault(prompt, RowInterrupted())
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
    frame = _frame([answers.get(p) if p is not None else None for p in prompts], index, labels)
    frame.attrs["ollama_magic"] = {
        "model": model, "choices": labels, "distinct": len(distinct), "asked": len(answers) - unfinished - cached,
        "cached": cached,
        "failed": sum(isinstance(a, RowError) for a in answers.values()) - unfinished, "interrupted": interrupted,
        "unfinished": unfinished}
    return frame


def _outcome(future: Future[ClassifyResponse]) -> ClassifyResponse | RowError:
    """The row's answer or its error; a server that cannot score labels at all is one error for the cell."""
    try:
        return future.result()
    except NotSupported:
        raise
    except Exception as exc:  # noqa: BLE001 - one row's failure is that row's value
        return row_error(exc)


def _frame(results: list[ClassifyResponse | RowError | None], index: pd.Index, labels: list[str]) -> pd.DataFrame:
    columns = ["label", *(f"p_{label}" for label in labels), "entropy"]
    rows: list[dict[str, Any]] = []
    errors: list[str | None] = []
    for result in results:
        if isinstance(result, ClassifyResponse):
            rows.append({"label": result.label, "entropy": result.entropy,
                         **{f"p_{label}": result.probabilities[label] for label in labels}})
            errors.append(None)
        else:
            rows.append({})
            errors.append(str(result) if isinstance(result, RowError) else None)
    frame = pd.DataFrame(rows, index=index, columns=columns)
    for name in columns[1:]:
        frame[name] = frame[name].astype(float)
    if any(errors):
        frame["error"] = errors
    return frame


__all__ = ["Classification", "classify", "classify_rows", "labels_of", "parse_labels"]
