"""Turn a request (prompt or messages, system, tools) into the text a model sees, as Ollama does.

The model's TEMPLATE (Go syntax) wins; a GGUF ``tokenizer.chat_template`` (Jinja) is used when there is
none; ``{{ .Prompt }}`` otherwise. Templates that use ``.Messages`` are rendered once over the whole
conversation; older per-turn templates (``.System``/``.Prompt``/``.Response``) are rendered turn by
turn and the last turn is cut where the reply starts.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Mapping, Sequence

from jinja2 import TemplateError as JinjaError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import InvalidRequest
from ..store.modelfile import DEFAULT_TEMPLATE
from .gotemplate import JSONText, Template, TemplateError
from .thinking import JINJA_TAGS, infer_tags, think_enabled, think_level
from .toolcalls import tool_call_tag

_CUT = "\x00\x01response\x01\x00"


def _go_message(message: Mapping[str, Any]) -> dict[str, Any]:
    calls = message.get("tool_calls") or []
    return {
        "Role": message.get("role", ""),
        "Content": message.get("content") or "",
        "Thinking": message.get("thinking") or "",
        "Images": message.get("images") or [],
        "ToolName": message.get("tool_name") or message.get("name") or "",
        "ToolCallID": message.get("tool_call_id") or "",
        "ToolCalls": [
            {
                "ID": c.get("id", ""),
                "Function": {
                    "Index": (c.get("function") or {}).get("index", 0),
                    "Name": (c.get("function") or {}).get("name", ""),
                    "Arguments": JSONText((c.get("function") or {}).get("arguments") or {}),
                },
            }
            for c in calls
        ],
    }


class GoPrompt:
    """Prompt building with an Ollama (Go) template."""

    def __init__(self, source: str) -> None:
        template = Template(source)
        if not (template.uses("Messages") or template.uses("Response")):
            source += "{{ .Response }}"  # Ollama appends it, so per-turn history renders the replies
            template = Template(source)
        self.template = template
        self.supports_tools = template.uses("Tools")
        self.supports_suffix = template.uses("Suffix")
        self.thinking_tags = infer_tags(template)
        self.tool_tag = tool_call_tag(template)

    def _values(self, **values: Any) -> dict[str, Any]:
        base = {"System": "", "Prompt": "", "Response": "", "Suffix": "", "Messages": [], "Tools": None,
                "Think": False, "ThinkLevel": "", "IsThinkSet": False}
        base.update(values)
        return base

    def render_chat(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None = None,
                    think: bool | str | None = None) -> str:
        system = "\n\n".join(m.get("content") or "" for m in messages if m.get("role") == "system")
        thinking = dict(Think=think_enabled(think), ThinkLevel=think_level(think), IsThinkSet=think is not None)
        if self.template.uses("Messages"):
            return self.template.render(
                self._values(System=system, Messages=[_go_message(m) for m in messages],
                             Tools=JSONText(list(tools)) if tools else None, **thinking)
            )
        return self._render_turns(messages, thinking)

    def _render_turns(self, messages: Sequence[Mapping[str, Any]], thinking: Mapping[str, Any]) -> str:
        turns: list[dict[str, str]] = []
        current = {"System": "", "Prompt": "", "Response": ""}
        for message in messages:
            role, content = message.get("role"), message.get("content") or ""
            if role == "system":
                if current["Prompt"] or current["Response"]:
                    turns.append(current)
                    current = {"System": "", "Prompt": "", "Response": ""}
                current["System"] = content
            elif role == "assistant":
                current["Response"] = content
                turns.append(current)
                current = {"System": "", "Prompt": "", "Response": ""}
            else:
                if current["Prompt"]:
                    turns.append(current)
                    current = {"System": "", "Prompt": "", "Response": ""}
                current["Prompt"] = content
        if current["Prompt"] or current["System"] or not turns:
            turns.append(current)
        out = []
        for i, turn in enumerate(turns):
            last = i == len(turns) - 1
            values = self._values(**turn, **thinking)
            if last and not turn["Response"]:
                values["Response"] = _CUT
            text = self.template.render(values)
            out.append(text.split(_CUT, 1)[0] if last else text)
        return "".join(out)

    def render_generate(self, prompt: str, system: str, suffix: str = "", think: bool | str | None = None) -> str:
        if suffix:
            if not self.supports_suffix:
                raise InvalidRequest("this model does not support insert (its template has no .Suffix)")
            return self.template.render(self._values(Prompt=prompt, Suffix=suffix)).split(_CUT, 1)[0]
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return self.render_chat(messages, think=think)


def _raise(message: str) -> None:
    raise InvalidRequest(f"chat template error: {message}")


class JinjaPrompt:
    """Prompt building with the GGUF's own Jinja chat template (Hugging Face conventions)."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = lambda v, indent=None, **_: json.dumps(v, ensure_ascii=False, indent=indent)
        env.globals.update(raise_exception=_raise, strftime_now=lambda fmt: datetime.now().strftime(fmt))
        try:
            self.template = env.from_string(source)
        except JinjaError as exc:
            raise TemplateError(f"GGUF chat template does not parse: {exc}") from None
        self.bos_token, self.eos_token = bos_token, eos_token
        self.supports_tools = "tools" in source
        self.supports_suffix = False
        self.thinking_tags = JINJA_TAGS if all(tag in source for tag in JINJA_TAGS) else ("", "")
        self.tool_tag = tool_call_tag(None, source)

    def render_chat(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None = None,
                    think: bool | str | None = None) -> str:
        extra = {} if think is None else {"enable_thinking": think_enabled(think)}
        try:
            return self.template.render(
                messages=[dict(m) for m in messages], tools=list(tools) if tools else None,
                add_generation_prompt=True, bos_token=self.bos_token, eos_token=self.eos_token, **extra,
            )
        except JinjaError as exc:
            raise TemplateError(f"GGUF chat template failed: {exc}") from None

    def render_generate(self, prompt: str, system: str, suffix: str = "", think: bool | str | None = None) -> str:
        if suffix:
            raise InvalidRequest("this model does not support insert (no template with .Suffix)")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return self.render_chat(messages, think=think)


PromptTemplate = GoPrompt | JinjaPrompt


def prompt_template(go_source: str | None, jinja_source: str | None, bos: str = "", eos: str = "") -> PromptTemplate:
    """The template a model uses: Modelfile TEMPLATE, else the GGUF's Jinja one, else ``{{ .Prompt }}``."""
    if go_source:
        return GoPrompt(go_source)
    if jinja_source:
        return JinjaPrompt(jinja_source, bos, eos)
    return GoPrompt(DEFAULT_TEMPLATE)
