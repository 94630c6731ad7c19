"""OLLAMA_FLASH_ATTENTION and OLLAMA_KV_CACHE_TYPE: parsed as Ollama parses them, carried as load
options into llama.cpp's context parameters, and a quantized cache that needs flash attention where it
is forced off falls back to f16 with one note, before llama.cpp sees it (no model needed)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import llama_cpp
import pytest

from ollama_magic import envconfig
from ollama_magic.engine.llama_context import (ContextShape, EmbeddingContext, LlamaContext, check_shape,
                                               settle_attention)
from ollama_magic.engine.loading import load_options
from ollama_magic.store.gguf_meta import GGUFInfo

SHAPE = ContextShape(num_ctx=512, parallel=2, num_batch=512, threads=1, num_gpu=0, use_mmap=True)


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(envconfig, "_warned", set())
    monkeypatch.delenv("OLLAMA_FLASH_ATTENTION", raising=False)
    monkeypatch.delenv("OLLAMA_KV_CACHE_TYPE", raising=False)


@pytest.mark.parametrize("text, state", [("", "auto"), ("1", "on"), ("true", "on"), ("TRUE", "on"), ("yes", "on"),
                                         ("0", "off"), ("false", "off"), ("f", "off"), ("no", "off"),
                                         ("'1'", "on")])
def test_flash_attention_is_auto_unless_a_boolean_forces_it(monkeypatch: pytest.MonkeyPatch, text: str,
                                                            state: str) -> None:
    monkeypatch.setenv("OLLAMA_FLASH_ATTENTION", text)
    assert envconfig.flash_attention() == state


def test_a_flash_attention_value_that_is_no_boolean_warns_once_and_stays_auto(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OLLAMA_FLASH_ATTENTION", "sometimes")
    with caplog.at_level(logging.WARNING, logger="ollama_magic"):
        assert [envconfig.flash_attention() for _ in range(3)] == ["auto"] * 3
    [warning] = [r.getMessage() for r in caplog.records if "OLLAMA_FLASH_ATTENTION" in r.getMessage()]
    assert "'sometimes'" in warning and "auto" in warning


@pytest.mark.parametrize("text, kind", [("", "f16"), ("f16", "f16"), ("q8_0", "q8_0"), ("Q8_0", "q8_0"),
                                        ("q4_0", "q4_0"), (" q4_0 ", "q4_0")])
def test_kv_cache_type_takes_ollamas_three_types(monkeypatch: pytest.MonkeyPatch, text: str, kind: str) -> None:
    monkeypatch.setenv("OLLAMA_KV_CACHE_TYPE", text)
    assert envconfig.kv_cache_type() == kind


@pytest.mark.parametrize("bad", ["q5_1", "f32", "bf16", "q8", "int8"])
def test_another_kv_cache_type_is_one_warning_and_f16_as_in_ollama(monkeypatch: pytest.MonkeyPatch,
                                                                   caplog: pytest.LogCaptureFixture,
                                                                   bad: str) -> None:
    monkeypatch.setenv("OLLAMA_KV_CACHE_TYPE", bad)
    with caplog.at_level(logging.WARNING, logger="ollama_magic"):
        assert [envconfig.kv_cache_type() for _ in range(3)] == ["f16"] * 3
    [warning] = [r.getMessage() for r in caplog.records if "OLLAMA_KV_CACHE_TYPE" in r.getMessage()]
    assert repr(bad) in warning and "f16, q8_0, q4_0" in warning


def _record(tmp_path: Path):  # noqa: ANN202 - a stand-in for a store record
    class Record:
        model_path = tmp_path / "weights.gguf"
        projector_paths: list[Path] = []
        adapter_paths: list[Path] = []

        def gguf_info(self) -> GGUFInfo:
            return GGUFInfo(metadata={"general.architecture": "llama", "llama.context_length": 8192})

    return Record()


def test_load_options_carry_both_settings_and_an_embedding_model_keeps_f16(monkeypatch: pytest.MonkeyPatch,
                                                                             tmp_path: Path) -> None:
    monkeypatch.setenv("OLLAMA_FLASH_ATTENTION", "0")
    monkeypatch.setenv("OLLAMA_KV_CACHE_TYPE", "q4_0")
    opts = {"num_ctx": 2048}
    chat = load_options(_record(tmp_path), opts, embedding=False, parallel=4, offload=False)
    assert (chat.flash_attn, chat.kv_cache_type) == ("off", "q4_0")
    embed = load_options(_record(tmp_path), opts, embedding=True, parallel=4, offload=False)
    assert (embed.flash_attn, embed.kv_cache_type) == ("off", "f16")
    monkeypatch.delenv("OLLAMA_FLASH_ATTENTION")
    monkeypatch.delenv("OLLAMA_KV_CACHE_TYPE")
    plain = load_options(_record(tmp_path), opts, embedding=False, parallel=4, offload=False)
    assert (plain.flash_attn, plain.kv_cache_type) == ("auto", "f16")


def _params(shape: ContextShape, cls: type = LlamaContext) -> llama_cpp.llama_context_params:
    """The context parameters a load would hand llama.cpp (no model: context_params reads only the shape)."""
    ctx = cls.__new__(cls)
    ctx._pooling_request = llama_cpp.LLAMA_POOLING_TYPE_UNSPECIFIED
    return ctx.context_params(shape)


@pytest.mark.parametrize("state, expected", [("auto", llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO),
                                             ("on", llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED),
                                             ("off", llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED)])
def test_the_flash_attention_state_reaches_llama_cpp(state: str, expected: int) -> None:
    assert _params(replace(SHAPE, flash_attn=state)).flash_attn_type == expected


@pytest.mark.parametrize("kind, ggml_type", [("f16", llama_cpp.GGML_TYPE_F16), ("q8_0", llama_cpp.GGML_TYPE_Q8_0),
                                             ("q4_0", llama_cpp.GGML_TYPE_Q4_0)])
def test_the_cache_type_is_both_k_and_v_as_ollama_sets_it(kind: str, ggml_type: int) -> None:
    params = _params(replace(SHAPE, flash_attn="on", kv_cache_type=kind))
    assert (params.type_k, params.type_v) == (ggml_type, ggml_type)


def test_an_embedding_context_keeps_flash_attention_on_unless_it_is_forced_off() -> None:
    on = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    assert _params(SHAPE, EmbeddingContext).flash_attn_type == on
    assert _params(replace(SHAPE, flash_attn="on"), EmbeddingContext).flash_attn_type == on
    off = _params(replace(SHAPE, flash_attn="off"), EmbeddingContext)
    assert off.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED


@pytest.mark.parametrize("kind", ["q8_0", "q4_0"])
def test_a_quantized_cache_with_flash_attention_forced_off_is_f16_and_one_note(kind: str) -> None:
    settled, note = settle_attention(replace(SHAPE, flash_attn="off", kv_cache_type=kind))
    assert (settled.flash_attn, settled.kv_cache_type) == ("off", "f16")
    assert note is not None and "\n" not in note and kind in note and "f16" in note


@pytest.mark.parametrize("state, kind", [("auto", "q8_0"), ("on", "q4_0"), ("off", "f16"), ("auto", "f16")])
def test_what_llama_cpp_can_take_is_left_as_asked(state: str, kind: str) -> None:
    shape = replace(SHAPE, flash_attn=state, kv_cache_type=kind)
    assert settle_attention(shape) == (shape, None)


@pytest.mark.parametrize("field, value", [("flash_attn", "maybe"), ("kv_cache_type", "q5_1"),
                                          ("kv_cache_type", "F16")])
def test_a_shape_with_an_unknown_attention_setting_is_refused_before_llama_cpp(field: str, value: str) -> None:
    with pytest.raises(ValueError, match="flash attention" if field == "flash_attn" else "K/V cache type"):
        check_shape(replace(SHAPE, **{field: value}))
