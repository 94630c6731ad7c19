"""Model names: parsing, the short display form, and the manifest path a name maps to."""

from __future__ import annotations

import posixpath
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ollama_magic.errors import InvalidModelName, InvalidRequest
from ollama_magic.names import ModelName, normalize

_SAFE_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")


# --- accepted names -----------------------------------------------------------------------------


def test_bare_model_gets_latest_tag() -> None:
    assert normalize("gemma3") == "gemma3:latest"
    name = ModelName.parse("gemma3")
    assert (name.host, name.namespace, name.model, name.tag) == ("registry.ollama.ai", "library", "gemma3", "latest")


def test_explicit_tag_is_kept() -> None:
    assert normalize("gemma3:270m") == "gemma3:270m"
    assert ModelName.parse("gemma3:270m").tag == "270m"


def test_namespace_is_kept_in_short_form() -> None:
    name = ModelName.parse("ns/model:tag")
    assert (name.host, name.namespace, name.model, name.tag) == ("registry.ollama.ai", "ns", "model", "tag")
    assert name.short == "ns/model:tag"
    assert normalize("ns/model") == "ns/model:latest"


def test_host_with_port_is_kept_and_tag_split_at_last_colon_after_last_slash() -> None:
    name = ModelName.parse("host.example:5000/ns/model:tag")
    assert name.host == "host.example:5000"
    assert name.namespace == "ns"
    assert name.model == "model"
    assert name.tag == "tag"
    assert name.short == "host.example:5000/ns/model:tag"


def test_host_port_without_tag_defaults_to_latest() -> None:
    name = ModelName.parse("host.example:5000/ns/model")
    assert name.host == "host.example:5000"
    assert name.tag == "latest"
    assert name.short == "host.example:5000/ns/model:latest"


def test_default_registry_and_library_shorten_to_model_and_tag() -> None:
    assert normalize("registry.ollama.ai/library/x:y") == "x:y"
    assert ModelName.parse("registry.ollama.ai/library/x:y") == ModelName.parse("x:y")


def test_default_registry_with_other_namespace_shortens_to_namespace_form() -> None:
    assert normalize("registry.ollama.ai/someone/x:y") == "someone/x:y"


def test_scheme_on_host_is_accepted_and_ignored() -> None:
    name = ModelName.parse("https://host/ns/m:t")
    assert (name.host, name.namespace, name.model, name.tag) == ("host", "ns", "m", "t")
    assert name.short == "host/ns/m:t"


def test_str_is_the_short_form() -> None:
    assert str(ModelName.parse("gemma3")) == "gemma3:latest"


def test_manifest_relpath_has_host_namespace_model_tag() -> None:
    assert ModelName.parse("gemma3:270m").manifest_relpath.as_posix() == "registry.ollama.ai/library/gemma3/270m"
    assert ModelName.parse("h.example:5000/ns/m:t").manifest_relpath.parts == ("h.example:5000", "ns", "m", "t")


def test_dots_dashes_and_underscores_are_allowed_inside_model_and_tag() -> None:
    assert normalize("qwen2.5-coder_x:1.5b-instruct_q4") == "qwen2.5-coder_x:1.5b-instruct_q4"


def test_80_char_model_part_is_accepted() -> None:
    model = "m" * 80
    assert ModelName.parse(model).model == model


# --- refused names ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("..", id="dotdot"),
        pytest.param("../x", id="parent-prefix"),
        pytest.param("a/../b", id="parent-in-middle"),
        pytest.param("/abs", id="absolute"),
        pytest.param("a//b", id="double-slash"),
        pytest.param("x:", id="empty-tag"),
        pytest.param(":tag", id="empty-model"),
        pytest.param("a/b/c/d", id="four-parts"),
        pytest.param("my model", id="space"),
        pytest.param(" gemma3", id="leading-space"),
        pytest.param("gemma3 ", id="trailing-space"),
        pytest.param(".hidden", id="dot-start"),
        pytest.param("model@sha256:" + "0" * 64, id="digest"),
        pytest.param("m" * 81, id="81-char-model"),
        pytest.param("model:ta/g", id="slash-in-tag"),
        pytest.param("ns\\model", id="backslash"),
        pytest.param("..\\..\\etc", id="backslash-traversal"),
        pytest.param("model\x00", id="nul-byte"),
        pytest.param("gemma3\n", id="trailing-newline"),
        pytest.param("modèle", id="unicode-letter"),
        pytest.param("ns/mödel:tag", id="unicode-in-model"),
        pytest.param("gemma3:lätest", id="unicode-in-tag"),
        pytest.param("h/ns/m:.t", id="dot-start-tag"),
        pytest.param("h/n.s/m", id="dot-in-namespace"),
        pytest.param("../ns/m", id="dotdot-host"),
        pytest.param("a..b/ns/m", id="dotdot-inside-host"),
    ],
)
def test_doubtful_names_are_refused_with_invalid_model_name(text: str) -> None:
    with pytest.raises(InvalidModelName) as info:
        ModelName.parse(text)
    assert str(info.value).startswith("invalid model name")


def test_normalize_refuses_what_parse_refuses() -> None:
    with pytest.raises(InvalidModelName):
        normalize("../x")


def test_invalid_model_name_is_a_400_invalid_request() -> None:
    with pytest.raises(InvalidRequest) as info:
        ModelName.parse("")
    assert isinstance(info.value, InvalidModelName)
    assert info.value.status_code == 400


def test_non_string_is_refused() -> None:
    with pytest.raises(InvalidModelName):
        ModelName.parse(None)  # type: ignore[arg-type]


def test_refusal_message_names_the_bad_part() -> None:
    with pytest.raises(InvalidModelName) as info:
        ModelName.parse("ns/.hidden:tag")
    assert "model" in str(info.value)
    assert ".hidden" in str(info.value)


# --- properties ---------------------------------------------------------------------------------

# Mostly characters that matter to the grammar, so that many generated strings parse.
_name_chars = st.sampled_from(list("abcXYZ019_.-:/@\\ \x00é") + ["://", "..", "registry.ollama.ai", "library"])
_names = st.one_of(
    st.text(max_size=40),
    st.lists(_name_chars, max_size=16).map("".join),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_names)
def test_any_string_either_is_refused_or_maps_inside_the_manifest_root(text: str) -> None:
    try:
        name = ModelName.parse(text)
    except InvalidModelName:
        return
    parts = name.manifest_relpath.parts
    assert len(parts) == 4
    for part in parts:
        assert part
        assert "/" not in part
        assert part not in (".", "..")  # "0.." is a harmless file name; only a whole ".." part escapes
        assert _SAFE_PART.fullmatch(part), part
    joined = posixpath.normpath(posixpath.join("/root/manifests", *parts))
    assert joined.startswith("/root/manifests/")
    assert ModelName.parse(name.short) == name


@settings(max_examples=200, deadline=None)
@given(
    host=st.one_of(st.none(), st.from_regex(r"[a-z0-9_][a-z0-9_-]{0,10}(\.[a-z0-9_-]{1,6}){0,2}(:[0-9]{1,5})?", fullmatch=True)),
    namespace=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,20}", fullmatch=True)),
    model=st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}", fullmatch=True),
    tag=st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}", fullmatch=True)),
)
def test_well_formed_names_parse_and_round_trip_through_short(host, namespace, model, tag) -> None:
    if host is not None and ".." in host:
        return
    text = model
    if namespace is not None or host is not None:
        text = f"{namespace or 'library'}/{text}"
    if host is not None:
        text = f"{host}/{text}"
    if tag is not None:
        text = f"{text}:{tag}"
    name = ModelName.parse(text)
    assert name.model == model
    assert name.tag == (tag or "latest")
    assert ModelName.parse(name.short) == name
    assert normalize(name.short) == name.short
