"""Ollama's registry protocol (the OCI distribution API with Ollama's media types): pull and push.

``pull_model``/``push_model`` yield Ollama's progress messages; every front end goes through
``Engine.pull``/``Engine.push``, which call them.
"""

from .client import RegistryClient, RegistryRef
from .transfer import pull_model, push_model

__all__ = ["RegistryClient", "RegistryRef", "pull_model", "push_model"]
