"""LoRA adapters without a model: the header checks (``store/adapters.py``), the request's scale vector
(``engine/lora.py``), the ``lora_scale``/``lora`` options and where the adapter's bytes are counted."""

from __future__ import annotations

import gguf
import pytest

from ollama_magic.engine.buffer_report import BufferReport
from ollama_magic.engine.geometry import geometry
from ollama_magic.engine.lora import lora_scales, with_adapters
from ollama_magic.errors import InvalidRequest
from ollama_magic.options import check_options
from ollama_magic.store.adapters import check_adapter
from ollama_magic.store.gguf_meta import GGUFInfo, TensorInfo, tensor_nbytes

F32, F16, Q4_0, Q8_0 = (int(gguf.GGMLQuantizationType[n]) for n in ("F32", "F16", "Q4_0", "Q8_0"))
STRING, FLOAT32, FLOAT64 = gguf.GGUFValueType.STRING, gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.FLOAT64


def tensor(name: str, shape: tuple[int, ...], kind: int = F32) -> TensorInfo:
    count = 1
    for d in shape:
        count *= d
    return TensorInfo(name, kind, shape, tensor_nbytes(kind, count))


def base(tied: bool = True) -> GGUFInfo:
    """A two-block llama: n_embd 64, n_vocab 100, q [64, 64], k [64, 32]."""
    tensors = [tensor("token_embd.weight", (64, 100), Q8_0)]
    for i in range(2):
        tensors += [tensor(f"blk.{i}.attn_q.weight", (64, 64), Q8_0), tensor(f"blk.{i}.attn_k.weight", (64, 32), Q8_0),
                    tensor(f"blk.{i}.attn_norm.weight", (64,))]
    if not tied:
        tensors.append(tensor("output.weight", (64, 100), Q8_0))
    return GGUFInfo(metadata={"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64},
                    tensors=tensors)


def adapter(*tensors: TensorInfo, arch: str = "llama", kind: str = "lora", **metadata: object) -> GGUFInfo:
    meta = {"general.architecture": arch, "general.type": "adapter", "adapter.type": kind, "adapter.lora.alpha": 16.0,
            **metadata}
    types = {k: STRING for k in ("general.architecture", "general.type", "adapter.type")} | {"adapter.lora.alpha": FLOAT32}
    return GGUFInfo(metadata=meta, tensors=list(tensors) or pair("blk.0.attn_q.weight", 64, 64), value_types=types)


def pair(weight: str, n_in: int, n_out: int, rank: int = 4, kind: int = F32) -> list[TensorInfo]:
    return [tensor(f"{weight}.lora_a", (n_in, rank), kind), tensor(f"{weight}.lora_b", (rank, n_out), kind)]


def refused(info: GGUFInfo, of: GGUFInfo | None = None) -> str:
    with pytest.raises(InvalidRequest) as caught:
        check_adapter(of or base(), info, "a.gguf")
    message = str(caught.value)
    assert "\n" not in message and "a.gguf" in message
    return message


def test_a_lora_shaped_for_its_base_is_accepted() -> None:
    check_adapter(base(), adapter(*pair("blk.0.attn_q.weight", 64, 64), *pair("blk.1.attn_k.weight", 64, 32, rank=8),
                                  tensor("blk.0.attn_norm.weight", (64,))), "a.gguf")  # norms: skipped, as llama.cpp


def test_a_lora_for_another_architecture_or_of_another_kind_is_refused() -> None:
    assert "architecture 'gemma3', the base is 'llama'" in refused(adapter(arch="gemma3"))
    assert "only LoRA adapters" in refused(adapter(kind="control_vector"))
    assert "activated LoRA" in refused(adapter(**{"adapter.alora.invocation_tokens": [1, 2]}))
    model = adapter()
    model.metadata["general.type"] = "model"
    assert "not 'adapter'" in refused(model)


@pytest.mark.parametrize("tensors, words", [
    (pair("blk.0.attn_q.weight", 80, 64), "[64, 64] in the base but its LoRA halves are [80, 4] and [4, 64] "
                                          "(expected [64, 4] and [4, 64])"),
    (pair("blk.0.attn_k.weight", 64, 64), "expected [64, 4] and [4, 32]"),
    ([tensor("blk.0.attn_q.weight.lora_a", (64, 4)), tensor("blk.0.attn_q.weight.lora_b", (8, 64))], "expected [64, 4] and [4, 64]"),
    (pair("blk.0.attn_v.weight", 64, 64), "which the base model does not have"),
    (pair("blk.0.attn_q.weight", 64, 64)[:1], "has no .lora_b half"),
    ([tensor("blk.0.attn_q.weight.lora_x", (64, 4))], "neither a .lora_a nor a .lora_b half"),
    (pair("blk.0.attn_q.weight", 64, 64, kind=Q4_0), "stored as Q4_0"),
    ([tensor("blk.0.attn_q.weight.lora_a", (64, 4, 2)), tensor("blk.0.attn_q.weight.lora_b", (4, 64))], "is 2-D"),
    (pair("blk.0.attn_norm.weight", 64, 1), "only 2-D weights"),
    (pair("token_embd.weight", 64, 100), "tied embeddings"),
])
def test_a_lora_that_does_not_fit_the_base_is_refused_in_one_line(tensors: list[TensorInfo], words: str) -> None:
    assert words in refused(adapter(*tensors))


def test_a_token_embedding_lora_is_looked_up_so_its_halves_are_swapped() -> None:
    untied = base(tied=False)
    looked_up = [tensor("token_embd.weight.lora_a", (4, 100)), tensor("token_embd.weight.lora_b", (4, 64))]
    check_adapter(untied, adapter(*looked_up), "a.gguf")
    ranks_differ = [tensor("token_embd.weight.lora_a", (4, 100)), tensor("token_embd.weight.lora_b", (8, 64))]
    assert "expected [4, 100] and [4, 64]" in refused(adapter(*ranks_differ), untied)  # llama.cpp misses this one


def test_keys_llama_cpp_reads_with_a_type_assert_must_have_that_type() -> None:
    info = adapter()
    info.value_types["adapter.lora.alpha"] = FLOAT64  # gguf_get_val_f32 would abort the process
    assert "adapter.lora.alpha is stored as FLOAT64, not FLOAT32" in refused(info)


def test_the_scale_vector_follows_llama_server() -> None:
    assert lora_scales({}, 2) == (1.0, 1.0)
    assert lora_scales({"lora_scale": 0.5}, 2) == (0.5, 0.5)
    assert lora_scales({"lora_scale": 0.5, "lora": [{"id": 1, "scale": 2.0}]}, 3) == (0.0, 2.0, 0.0)  # others at 0
    assert lora_scales({"lora": []}, 2) == (1.0, 1.0)  # an empty list: the defaults
    assert lora_scales({"lora_scale": 3.0}, 0) == ()
    with pytest.raises(InvalidRequest, match=r'adapter 2 does not exist: m has adapters 0 to 1'):
        lora_scales({"lora": [{"id": 2, "scale": 1.0}]}, 2, "m")
    with pytest.raises(InvalidRequest, match=r"m has no adapters"):
        lora_scales({"lora": [{"id": 0, "scale": 1.0}]}, 0, "m")


@pytest.mark.parametrize("options, words", [
    ({"lora_scale": 10.5}, 'option "lora_scale" must be from -10 to 10, got 10.5'),
    ({"lora_scale": float("inf")}, 'option "lora_scale" must be a number'),
    ({"lora": "0:1"}, 'option "lora" must be a list'),
    ({"lora": [{"id": 0, "scale": 1, "path": "x"}]}, 'option "lora" must be a list'),
    ({"lora": [{"id": "0", "scale": 1}]}, '"id" must be an adapter index'),
    ({"lora": [{"id": 0, "scale": 1}, {"id": 0, "scale": 2}]}, "adapter 0 is listed twice"),
    ({"lora": [{"id": 0, "scale": -11}]}, '"scale" must be a number from -10 to 10'),
])
def test_bad_lora_options_are_refused(options: dict, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_options(options, strict=False)
    assert words in str(caught.value)


def test_lora_is_a_request_option_and_lora_scale_also_a_parameter() -> None:
    assert check_options({"lora": [{"id": 0.0, "scale": 1}]}, strict=False) == {"lora": [{"id": 0, "scale": 1.0}]}
    assert check_options({"lora_scale": -2}, strict=True) == {"lora_scale": -2}
    with pytest.raises(InvalidRequest, match="unknown parameter 'lora'"):
        check_options({"lora": []}, strict=True)


def test_an_adapters_bytes_land_on_the_layers_of_the_weights_it_patches() -> None:
    geom = geometry(base(tied=False))
    tensors = [*pair("blk.1.attn_q.weight", 64, 64), *pair("output.weight", 64, 100),
               tensor("token_embd.weight.lora_a", (4, 100)), tensor("token_embd.weight.lora_b", (4, 64))]
    grown = with_adapters(geom, [adapter(*tensors)])
    assert grown.layer_weights[0] == geom.layer_weights[0]
    assert grown.layer_weights[1] - geom.layer_weights[1] == (64 * 4 + 4 * 64) * 4
    assert grown.output_weights - geom.output_weights == (64 * 4 + 4 * 100) * 4
    assert grown.input_weights - geom.input_weights == (4 * 100 + 4 * 64) * 4


def test_llama_cpps_lora_buffer_lines_count_as_weights() -> None:
    report = BufferReport().add_lines(["llama_adapter_lora_init_impl:        CPU LoRA buffer size =     1.06 MiB",
                                       "load_tensors:   CPU_Mapped model buffer size =    85.00 MiB"])
    assert report.devices["CPU"].model == round(1.06 * 1024 * 1024) + 85 * 1024 * 1024
