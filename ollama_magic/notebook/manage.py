"""``%ollama VERB ...``: the verbs, one module per group in ``verbs/``, registered in ``verbs.VERBS``.

Kept so that ``from ollama_magic.notebook.manage import run, VERBS, ...`` goes on working; importing it
registers every verb but ``fix`` (errorhelp's).
"""

from __future__ import annotations

from .verbs import VERBS, help_text, parse, run, verb
from .verbs import Text as _Text  # noqa: F401 - its old name
from .verbs import models as _models
from .verbs import panel as _panel  # noqa: F401 - registers %ollama panel
from .verbs import server as _server
from .verbs import threads as _threads  # noqa: F401 - registers threads, history, reset
from .verbs import tokens as _tokens

_parse = parse
_Url = _server.Url
TokenCount = _tokens.TokenCount
model_names = _models.model_names

__all__ = ["VERBS", "help_text", "model_names", "run", "verb"]
