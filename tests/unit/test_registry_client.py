"""Registry names, challenges and part plans: the pieces of the registry client that need no server."""

from __future__ import annotations

import pytest

from ollama_magic.errors import InvalidRequest
from ollama_magic.formatting import ProgressBars
from ollama_magic.registry.client import RegistryRef, parse_challenge
from ollama_magic.registry.download import MIN_PART, plan_parts
from ollama_magic.types import ProgressResponse


@pytest.mark.parametrize(
    ("text", "insecure", "url"),
    [
        ("gemma3", False, "https://registry.ollama.ai/v2/library/gemma3/manifests/latest"),
        ("gemma3:270m", False, "https://registry.ollama.ai/v2/library/gemma3/manifests/270m"),
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", False,
         "https://hf.co/v2/bartowski/Llama-3.2-1B-Instruct-GGUF/manifests/Q4_K_M"),
        ("127.0.0.1:5000/team/model:v1", True, "http://127.0.0.1:5000/v2/team/model/manifests/v1"),
        ("http://127.0.0.1:5000/team/model", True, "http://127.0.0.1:5000/v2/team/model/manifests/latest"),
    ],
)
def test_a_name_says_where_its_manifest_lives(text: str, insecure: bool, url: str) -> None:
    ref = RegistryRef.parse(text, insecure=insecure)
    assert ref.url("manifests", ref.name.tag) == url


def test_plain_http_needs_insecure_as_in_ollama() -> None:
    with pytest.raises(InvalidRequest, match="^insecure protocol http"):
        RegistryRef.parse("http://127.0.0.1:5000/team/model")


def test_bearer_and_basic_challenges_are_read() -> None:
    header = 'Bearer realm="https://ollama.com/token",service="ollama.com",scope="repository:library/gemma3:pull"'
    assert parse_challenge(header) == ("bearer", {"realm": "https://ollama.com/token", "service": "ollama.com",
                                                  "scope": "repository:library/gemma3:pull"})
    assert parse_challenge('Basic realm="basic-realm"') == ("basic", {"realm": "basic-realm"})


def test_parts_are_ollamas_split() -> None:
    parts = plan_parts(268_098_176)  # gemma3:270m's GGUF: 16 parts would be under 100 MB, so 100 MB parts
    assert [p.size for p in parts] == [MIN_PART, MIN_PART, 268_098_176 - 2 * MIN_PART]
    assert [p.offset for p in parts] == [0, MIN_PART, 2 * MIN_PART]
    big = plan_parts(8_000_000_000)
    assert len(big) == 16 and {p.size for p in big} == {500_000_000}
    assert [(p.offset, p.size) for p in plan_parts(10)] == [(0, 10)]


def test_progress_bars_show_a_bar_per_blob_and_other_statuses_as_lines(capsys: pytest.CaptureFixture) -> None:
    bars = ProgressBars()
    digest = "sha256:" + "ab" * 32
    bars.follow(iter([
        ProgressResponse(status="pulling manifest"),
        ProgressResponse(status=f"pulling {digest[7:19]}", digest=digest, total=2000),
        ProgressResponse(status=f"pulling {digest[7:19]}", digest=digest, total=2000, completed=2000),
        ProgressResponse(status="verifying sha256 digest"),
        ProgressResponse(status="success"),
    ]))
    err = capsys.readouterr().err
    assert err.startswith("pulling manifest\n") and f"pulling {digest[7:19]}: 100%" in err
    assert err.rstrip().endswith("verifying sha256 digest\nsuccess")
