"""The Engine over HTTP: Ollama's REST API and its OpenAI-compatible endpoints."""

from .app import create_app
from .background import BackgroundServer, parse_host

__all__ = ["BackgroundServer", "create_app", "parse_host"]
