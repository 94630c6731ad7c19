"""``python -m ollama_magic`` and the ``ollama-magic`` command: the CLI (``cli.main``)."""

from __future__ import annotations

import sys


def main() -> int:
    """Check ``$OLLAMA_HOST`` before importing the CLI: the ``ollama`` client the CLI imports parses
    that variable at import and would die on a malformed one with a traceback, not one line."""
    from .errors import InvalidRequest
    from .hosts import env_host

    try:
        env_host()
    except InvalidRequest as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    from .cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
