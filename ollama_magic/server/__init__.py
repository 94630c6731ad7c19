"""The Engine over HTTP: Ollama's REST API and its OpenAI-compatible endpoints."""

from .app import create_app
from ..hosts import parse_host
from .background import BackgroundServer

__all__ = ["BackgroundServer", "create_app", "parse_host"]
