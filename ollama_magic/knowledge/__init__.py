"""The notebook's own material as a searchable index: ``%ollama learn`` (sources -> chunks -> vectors
in a LanceDB table), ``%ollama search`` and ``%%chat --docs`` (the nearest chunks, cited).

One job per module: ``sources`` reads files, DataFrame columns and cells; ``chunking`` cuts texts by
the embedding model's tokens; ``index`` is the persisted store; ``learn`` joins them; ``search``
finds the nearest chunks; ``ask`` puts retrieved chunks into a message and names them.
"""

from __future__ import annotations

from .index import Index, delete_index, indexes_dir, list_indexes
from .learn import LearnReport, learn
from .search import search

__all__ = ["Index", "LearnReport", "delete_index", "indexes_dir", "learn", "list_indexes", "search"]
