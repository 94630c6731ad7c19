"""What ``-f code|html|math`` add to the prompt and do with the answer, as jupyter-ai's ``%%ai`` does.

Each form appends one short instruction to the user's message (the wording jupyter-ai uses, so
prompts written for ``%%ai`` behave the same here), renders the answer as its MIME type, and
``-f code`` also puts the code into a new cell below (``set_next_input``), saying so, because a
front end that ignores ``set_next_input`` (older VS Code) would otherwise lose it silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

#: Appended to the message, after a blank line. Markdown, text and json add nothing: markdown is
#: the default render, text is raw, and json is constrained by a grammar instead of by words.
FORMAT_INSTRUCTIONS = {
    "code": "Produce output as source code only, with no text or explanation before or after it.",
    "html": "Produce output in HTML format only, with no markup before or afterward.",
    "math": "Produce output in LaTeX format only, with $$ at the beginning and end.",
}


def with_instruction(text: str, fmt: str) -> str:
    """The message as sent for format ``fmt``."""
    instruction = FORMAT_INSTRUCTIONS.get(fmt)
    return f"{text}\n\n{instruction}" if instruction else text


def as_latex(text: str) -> str:
    """The answer as display math: models often forget one of the ``$$`` (or use ``\\[ \\]``)."""
    body = text.strip()
    for opening, closing in (("$$", "$$"), ("\\[", "\\]"), ("$", "$")):
        if body.startswith(opening) and body.endswith(closing) and len(body) >= len(opening) + len(closing):
            body = body[len(opening):len(body) - len(closing)].strip()
            break
    return f"$$\n{body}\n$$"


def insert_code_cell(shell: InteractiveShell, code: str, notice: Callable[[str], None] | None = None) -> bool:
    """Put ``code`` in a new cell below the running one; False (and nothing done) when it is empty."""
    if not code.strip() or shell is None:
        return False
    shell.set_next_input(code, replace=False)
    if notice is not None:
        notice("the code is in a new cell below")
    return True


def display_metadata(model: str, thread: str | None) -> dict[str, Any]:
    """Carried by every reply display, so a saved notebook says which model (and thread) wrote it."""
    return {"ollama_magic": {"model": model, "thread": thread}}


__all__ = ["FORMAT_INSTRUCTIONS", "as_latex", "display_metadata", "insert_code_cell", "with_instruction"]
