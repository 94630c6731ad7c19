"""The planner's geometry at sizes CI cannot load: Llama 3.1 8B and 70B, Qwen3-30B-A3B (MoE), Gemma 3 12B
(sliding window), each a GGUF header whose tensor data is a sparse hole (``tests/fixtures/model_shapes.py``),
checked against the bytes llama.cpp reported for the same files (``REFERENCE`` there; the integration test
``test_planner_shapes_llama.py`` re-measures it on the pinned llama.cpp). No llama.cpp here: these run
in the unit suite in about a second.

Exactness: the weights are compared to the byte (llama.cpp's ``llama_model_size``); a KV cache to within
0.005 MiB, the rounding of llama.cpp's ``%.2f MiB`` log line, which is all llama.cpp says about it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ollama_magic.engine.geometry import Geometry, geometry
from ollama_magic.store.gguf_meta import read_gguf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))
import model_shapes as ms

MIB = 1024 * 1024
#: llama.cpp logs MiB with 2 decimals
LOG_ROUNDING = 0.005 * MIB

PROBES = [(name, probe) for name, ref in ms.REFERENCE.items() for probe in ref.probes]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("shapes")
    return {name: ms.write_shape(shape, folder / f"{name}.gguf") for name, shape in ms.SHAPES.items()}


@pytest.fixture(scope="module")
def geometries(files: dict[str, Path]) -> dict[str, Geometry]:
    return {name: geometry(read_gguf(path)) for name, path in files.items()}


def _table(name: str) -> dict[str, int]:
    """The fixture's own tensor table: bytes per tensor name, from gguf's block sizes."""
    return {tensor: ms.nbytes(dims, qtype) for tensor, dims, qtype in ms.SHAPES[name].tensor_table()}


def test_the_files_are_full_size_and_sparse(files: dict[str, Path]) -> None:
    """A 40 GiB model costs a few KiB of disk: the header is real, the data a hole."""
    for name, path in files.items():
        assert path.stat().st_size > ms.REFERENCE[name].weights
        assert path.stat().st_blocks * 512 < 4 * MIB


@pytest.mark.parametrize("name", list(ms.SHAPES))
def test_weights_match_llama_cpp(geometries: dict[str, Geometry], name: str) -> None:
    g = geometries[name]
    assert g.weights == ms.REFERENCE[name].weights
    assert g.block_count == ms.SHAPES[name].n_layer and g.layers == ms.SHAPES[name].n_layer + 1


@pytest.mark.parametrize("name", list(ms.SHAPES))
def test_weights_per_layer(geometries: dict[str, Geometry], name: str) -> None:
    """Input (token_embd, kept on the CPU), each block, and the output layer, as llama.cpp groups them.
    llama.cpp only reports the total at no_alloc on a CPU-only build, so the split is checked against
    the fixture's table (written with gguf's block sizes, read back through gguf_meta's reader)."""
    g, table, shape = geometries[name], _table(name), ms.SHAPES[name]
    assert g.input_weights == table["token_embd.weight"]
    assert g.output_weights == table.get("output.weight", 0) + table["output_norm.weight"]
    for i in range(shape.n_layer):  # rope_freqs goes with layer 0: see test_rope_freqs_go_with_layer_0
        rope = table.get("rope_freqs.weight", 0) if i == 0 else 0
        assert g.layer_weights[i] == rope + sum(v for k, v in table.items() if k.startswith(f"blk.{i}."))
    # Q4_K_M's mix: attn_v/ffn_down are Q6_K on llama-quant.cpp's use_more_bits layers, so those are heavier
    heavy = {i for i in range(shape.n_layer) if ms.use_more_bits(i, shape.n_layer)}
    assert min(g.layer_weights[i] for i in heavy) > max(g.layer_weights[i] for i in set(range(shape.n_layer)) - heavy)


def test_tied_output_costs_token_embd_when_offloaded(geometries: dict[str, Geometry]) -> None:
    """Gemma 3 has no output.weight: llama.cpp duplicates token_embd onto the output layer's device."""
    assert geometries["gemma3-12b"].tied_output == _table("gemma3-12b")["token_embd.weight"]
    assert geometries["llama3.1-8b"].tied_output == 0


def test_rope_freqs_go_with_layer_0(geometries: dict[str, Geometry]) -> None:
    """llama-arch.cpp maps LLM_TENSOR_ROPE_FREQS to LLM_TENSOR_LAYER_REPEATING and llama.cpp's llama
    loader creates it for layer 0 (the other layers take a duplicate): its bytes live on layer 0's device."""
    g, table = geometries["llama3.1-8b"], _table("llama3.1-8b")
    assert g.layer_weights[0] == g.layer_weights[1] + table["rope_freqs.weight"]


def test_sliding_window_layers_are_llama_cpps(geometries: dict[str, Geometry]) -> None:
    """gemma3 without a sliding_window_pattern key: llama.cpp's pattern 6, every 6th layer global."""
    g = geometries["gemma3-12b"]
    assert g.swa_window == 1024
    assert tuple(i for i, swa in enumerate(g.swa_layers) if swa) == ms.GEMMA3_12B.swa_layers
    assert not any(geometries["llama3.1-70b"].swa_layers)


@pytest.mark.parametrize(("name", "probe"), PROBES, ids=[f"{n}-{p.num_ctx}x{p.parallel}-{p.kv_type}"
                                                        f"{'-fa' if p.flash else ''}{'' if p.swa_full else '-swa'}"
                                                        for n, p in PROBES])
def test_kv_cache_matches_llama_cpp(geometries: dict[str, Geometry], name: str, probe: ms.Probe) -> None:
    """Per cache (an iswa model's full-context layers, then its window layers): the layers llama.cpp put
    in it and their bytes, for n_ctx = num_ctx x parallel cells (padded to 256), f16/q8_0/q4_0, and
    the window cache at its full size or at min(cells, window x seqs + n_ubatch)."""
    g = geometries[name]
    per_layer = g.kv_cache_bytes(probe.num_ctx * probe.parallel, probe.parallel, probe.kv_type, probe.kv_type,
                                 swa_full=probe.swa_full, n_ubatch=ms.N_UBATCH)
    assert len(per_layer) == g.block_count
    caches = [[b for b, swa in zip(per_layer, g.swa_layers) if not swa],
              [b for b, swa in zip(per_layer, g.swa_layers) if swa]]
    caches = [c for c in caches if c]
    reported = ms.REFERENCE[name].probes[probe].kv
    assert [len(c) for c in caches] == [layers for _, layers, _ in reported]
    for layers, (_, _, mib) in zip(caches, reported):
        assert abs(sum(layers) - mib * MIB) <= LOG_ROUNDING, (sum(layers) / MIB, mib)
