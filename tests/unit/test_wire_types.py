"""Our show/list/progress results read like the ``ollama`` client's types (they are not subclasses;
``ollama_magic.types`` says why): every attribute the client's type declares is there, by attribute
and by subscript, so code written against ``ollama.Client`` runs on them unchanged."""

from __future__ import annotations

from datetime import datetime, timezone

import ollama

from ollama_magic.types import ListedModel, ListedModelDetails, ListResponse, ModelDetails, ProgressResponse, ShowResponse

NOW = datetime(2025, 1, 2, tzinfo=timezone.utc)


def client_fields(cls: type) -> set[str]:
    return set(cls.model_fields)


def test_show_response_has_every_attribute_of_the_clients() -> None:
    show = ShowResponse(modelfile="FROM x", template="{{ .Prompt }}", details=ModelDetails(family="gemma3"),
                        model_info={"general.architecture": "gemma3"}, capabilities=["completion"],
                        modified_at=NOW, parameters="temperature 1", license="MIT")
    for name in client_fields(ollama.ShowResponse):
        assert hasattr(show, name), name
    assert show.modelinfo == show["model_info"] == {"general.architecture": "gemma3"}
    assert show.details.family == show["details"]["family"] == "gemma3"
    assert show.capabilities == ["completion"] and show.modified_at == NOW


def test_list_response_entries_have_every_attribute_of_the_clients() -> None:
    entry = ListedModel(name="gemma3:270m", model="gemma3:270m", modified_at=NOW, size=5, digest="abc",
                        details=ListedModelDetails(family="gemma3", context_length=32768))
    listed = ListResponse(models=[entry])
    for name in client_fields(ollama.ListResponse.Model):
        assert hasattr(listed.models[0], name), name
    assert listed["models"][0]["model"] == listed.models[0].model == "gemma3:270m"
    assert listed.models[0].details.family == "gemma3" and listed.models[0].size == 5


def test_progress_response_has_the_clients_fields() -> None:
    line = ProgressResponse(status="pulling", digest="sha256:00", total=10, completed=4)
    assert client_fields(ollama.ProgressResponse) <= set(ProgressResponse.model_fields)
    assert (line.status, line["completed"], line.get("total")) == ("pulling", 4, 10)
