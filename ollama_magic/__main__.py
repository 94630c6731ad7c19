"""``python -m ollama_magic``: the same CLI as the ``ollama-magic`` command."""

import sys

from .cli import main

sys.exit(main())
