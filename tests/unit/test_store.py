"""Store operations in a temp root, on a tiny GGUF written by the test (no real model needed)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest

from conftest import write_tiny_gguf
from ollama_magic.engine.capabilities import capabilities
from ollama_magic.errors import BlobNotFound, DigestMismatch, InvalidDigest, InvalidModelName, InvalidRequest, ModelNotFound
from ollama_magic.store import ModelStore
from ollama_magic.store.blobs import parse_digest
from ollama_magic.types import CreateRequest


def create(store: ModelStore, name: str, request, **kw) -> list[str]:
    return [s.status for s in store.create(name, request, **kw)]


def test_create_from_gguf_path_lists_model_with_ollama_fields(store: ModelStore, tiny_gguf: Path) -> None:
    statuses = create(store, "tiny", f"FROM {tiny_gguf}")
    assert statuses[0] == "parsing GGUF"
    assert statuses[-2:] == ["writing manifest", "success"]

    [model] = store.list().models
    assert model.name == model.model == "tiny:latest"
    manifest_file = store.root / "manifests/registry.ollama.ai/library/tiny/latest"
    assert model.digest == hashlib.sha256(manifest_file.read_bytes()).hexdigest()
    manifest = json.loads(manifest_file.read_bytes())
    assert model.size == manifest["config"]["size"] + sum(layer["size"] for layer in manifest["layers"])
    assert model.details.format == "gguf"
    assert model.details.family == "llama"
    assert model.details.families == ["llama"]
    assert model.details.quantization_level == "F32"
    assert model.details.parameter_size == "104"  # 12*8 + 8 elements
    assert model.details.parent_model == ""


def test_manifest_is_written_in_ollamas_exact_format(store: ModelStore, tiny_gguf: Path) -> None:
    create(store, "tiny", f"FROM {tiny_gguf}\nPARAMETER stop <end>\nPARAMETER temperature 1")
    raw = (store.root / "manifests/registry.ollama.ai/library/tiny/latest").read_bytes()
    assert raw.endswith(b"}\n") and b": " not in raw  # Go's Encoder: compact plus a newline
    doc = json.loads(raw)
    assert list(doc) == ["schemaVersion", "mediaType", "config", "layers"]
    assert doc["schemaVersion"] == 2
    assert doc["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert doc["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    media = [layer["mediaType"] for layer in doc["layers"]]
    assert media == ["application/vnd.ollama.image.model", "application/vnd.ollama.image.params"]
    params_blob = store.blobs.path(doc["layers"][1]["digest"]).read_bytes()
    assert params_blob == b'{"stop":["\\u003cend\\u003e"],"temperature":1}\n'
    config = json.loads(store.blobs.path(doc["config"]["digest"]).read_bytes())
    assert config["rootfs"]["diff_ids"] == [layer["digest"] for layer in doc["layers"]]
    for layer in [doc["config"], *doc["layers"]]:
        blob = store.blobs.path(layer["digest"])
        assert blob.name == layer["digest"].replace(":", "-")
        assert blob.stat().st_size == layer["size"]
        assert "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest() == layer["digest"]


def test_from_model_inherits_layers_and_later_settings_override(store: ModelStore, tiny_gguf: Path) -> None:
    create(store, "base", f'FROM {tiny_gguf}\nSYSTEM "be brief"\nPARAMETER temperature 0.5\nPARAMETER top_k 10')
    create(store, "child", "FROM base\nSYSTEM be verbose\nPARAMETER temperature 0.9")
    child = store.find("child")
    assert child is not None
    assert child.system == "be verbose"
    assert child.parameters == {"temperature": 0.9, "top_k": 10}
    assert child.details.parent_model == "base:latest"
    assert store.find("base").system == "be brief"  # the base is untouched


@pytest.mark.parametrize("form", ["blob_path", "digest", "at_digest"])
def test_from_blob_forms_reuse_the_stored_blob(store: ModelStore, tiny_gguf: Path, form: str) -> None:
    digest = store.blobs.import_file(tiny_gguf)
    ref = {"blob_path": str(store.blobs.path(digest)), "digest": digest, "at_digest": "@" + digest}[form]
    create(store, "viablob", f"FROM {ref}", trusted=False)
    assert store.find("viablob").manifest.layers[0].digest == digest
    assert store.blobs.all_digests() >= {digest}


def test_seed_blob_path_from_another_root_maps_to_our_blob(store: ModelStore, tiny_gguf: Path) -> None:
    digest = store.blobs.import_file(tiny_gguf)
    seed_path = "/usr/share/ollama/.ollama/models/blobs/" + digest.replace(":", "-")
    create(store, "seed", CreateRequest(name="seed", modelfile=f"FROM {seed_path}"), trusted=False)
    assert store.find("seed").manifest.layers[0].digest == digest


def test_untrusted_create_refuses_server_paths(store: ModelStore, tiny_gguf: Path) -> None:
    with pytest.raises(InvalidRequest, match="uploaded first"):
        create(store, "x", f"FROM {tiny_gguf}", trusted=False)
    with pytest.raises(InvalidRequest, match="path"):
        create(store, "x", CreateRequest(path=str(tiny_gguf)), trusted=False)
    assert store.list().models == []
    assert store.blobs.all_digests() == set()


def test_from_unknown_model_is_not_found_with_ollamas_wording(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound, match='model "nosuchmodel" not found'):
        create(store, "x", "FROM nosuchmodel")


def test_from_missing_digest_is_not_found(store: ModelStore) -> None:
    with pytest.raises(BlobNotFound):
        create(store, "x", "FROM sha256:" + "0" * 64)


def test_structured_create_needs_from_or_files(store: ModelStore) -> None:
    with pytest.raises(InvalidRequest, match="neither 'from' or 'files' was specified"):
        create(store, "x", CreateRequest(system="hi"))


def test_structured_create_with_files_and_overrides(store: ModelStore, tiny_gguf: Path) -> None:
    digest = store.blobs.import_file(tiny_gguf)
    request = CreateRequest.model_validate(
        {
            "model": "structured",
            "files": {"tiny.gguf": digest},
            "template": "{{ .Prompt }}",
            "system": "sys",
            "parameters": {"num_ctx": 128, "stop": ["A", "B"]},
            "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
            "license": ["L1", "L2"],
        }
    )
    create(store, "structured", request, trusted=False)
    record = store.find("structured")
    assert record.template == "{{ .Prompt }}"
    assert record.system == "sys"
    assert record.parameters == {"num_ctx": 128, "stop": ["A", "B"]}
    assert record.messages == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert record.licenses == ["L1", "L2"]


def test_projector_from_line_becomes_a_projector_layer_and_shows_in_the_modelfile(
    store: ModelStore, tiny_gguf: Path, tmp_path: Path
) -> None:
    projector = write_tiny_gguf(tmp_path / "mmproj.gguf", arch="clip")
    create(store, "vision", f"FROM {tiny_gguf}\nFROM {projector}")
    record = store.find("vision")
    assert [p.name for p in record.projector_paths] == [store.blobs.path(store.blobs.import_file(projector)).name]
    assert store.show("vision").modelfile.count("\nFROM ") == 2


def test_structured_files_are_sorted_into_model_and_projector_by_their_header(
    store: ModelStore, tiny_gguf: Path, tmp_path: Path
) -> None:
    model = store.blobs.import_file(tiny_gguf)
    projector = store.blobs.import_file(write_tiny_gguf(tmp_path / "mmproj.gguf", arch="clip"))
    create(store, "v", CreateRequest(files={"mmproj.gguf": projector, "model.gguf": model}), trusted=False)
    layers = {layer.media_type.rsplit(".", 1)[-1]: layer.digest for layer in store.find("v").manifest.layers}
    assert layers == {"model": model, "projector": projector}
    with pytest.raises(InvalidRequest, match="exactly one GGUF model"):
        create(store, "w", CreateRequest(files={"mmproj.gguf": projector}), trusted=False)


def test_files_must_be_relative(store: ModelStore, tiny_gguf: Path) -> None:
    digest = store.blobs.import_file(tiny_gguf)
    with pytest.raises(InvalidRequest, match="relative"):
        create(store, "x", CreateRequest(files={"../../etc/x.gguf": digest}))


def test_structured_parameters_are_type_checked(store: ModelStore, tiny_gguf: Path) -> None:
    with pytest.raises(InvalidRequest, match="temperature"):
        create(store, "x", CreateRequest(from_=str(tiny_gguf), parameters={"temperature": "hot"}))
    with pytest.raises(InvalidRequest, match="unknown parameter 'bogus'"):
        create(store, "x", CreateRequest(from_=str(tiny_gguf), parameters={"bogus": 1}))


def test_an_unknown_quantize_type_is_refused_clearly(store: ModelStore, tiny_gguf: Path) -> None:
    with pytest.raises(InvalidRequest, match="unsupported quantization type Q3_K_M - supported types are"):
        create(store, "x", CreateRequest(from_=str(tiny_gguf), quantize="q3_K_M"))


def test_non_gguf_file_is_refused(store: ModelStore, tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    with pytest.raises(InvalidRequest, match="not a GGUF file"):
        create(store, "x", f"FROM {junk}")


def test_modelfile_paths_are_relative_to_base_dir(store: ModelStore, tmp_path: Path) -> None:
    sub = tmp_path / "proj"
    sub.mkdir()
    write_tiny_gguf(sub / "weights.gguf")
    create(store, "rel", "FROM ./weights.gguf", base_dir=sub)
    assert store.exists("rel")


def test_copy_shares_blobs_and_delete_prunes_only_unused_ones(store: ModelStore, tiny_gguf: Path) -> None:
    create(store, "orig", f"FROM {tiny_gguf}\nSYSTEM only here")
    unrelated = store.blobs.write_bytes(b"uploaded but not used yet")
    store.copy("orig", "ns/copy:v1")
    names = {m.name for m in store.list().models}
    assert names == {"orig:latest", "ns/copy:v1"}
    orig, copy = store.find("orig"), store.find("ns/copy:v1")
    assert orig.manifest == copy.manifest
    blobs_before = store.blobs.all_digests()

    store.delete("orig")
    assert store.blobs.all_digests() == blobs_before  # still used by the copy
    store.delete("ns/copy:v1")
    assert store.blobs.all_digests() == {unrelated}
    assert store.list().models == []
    assert not (store.manifests_dir / "registry.ollama.ai" / "ns").exists()  # empty dirs pruned


def test_replacing_a_model_prunes_its_old_layers(store: ModelStore, tiny_gguf: Path) -> None:
    create(store, "m", f"FROM {tiny_gguf}\nSYSTEM first")
    old_system = store.find("m").manifest.layer("application/vnd.ollama.image.system").digest
    create(store, "m", f"FROM {tiny_gguf}\nSYSTEM second")
    assert store.find("m").system == "second"
    assert not store.blobs.has(old_system)


def test_delete_and_copy_of_missing_model_are_not_found(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound, match='model "ghost" not found'):
        store.delete("ghost")
    with pytest.raises(ModelNotFound):
        store.copy("ghost", "other")


@pytest.mark.parametrize("bad", ["../evil", "a/../../b", "/etc/passwd", "x/y/z/w", "bad name", ""])
def test_bad_names_are_refused_and_nothing_is_written(store: ModelStore, tiny_gguf: Path, bad: str) -> None:
    with pytest.raises(InvalidModelName):
        create(store, bad, f"FROM {tiny_gguf}")
    assert not store.root.exists() or store.blobs.all_digests() == set()


def test_copy_to_bad_name_is_refused(store: ModelStore, tiny_gguf: Path) -> None:
    create(store, "ok", f"FROM {tiny_gguf}")
    with pytest.raises(InvalidModelName):
        store.copy("ok", "../../outside")
    assert [m.name for m in store.list().models] == ["ok:latest"]


def test_lookup_is_case_insensitive(store: ModelStore, tiny_gguf: Path) -> None:
    create(store, "MixedCase:Tag", f"FROM {tiny_gguf}")
    assert store.resolve("mixedcase:tag").name.short == "MixedCase:Tag"


def test_show_reports_modelfile_parameters_template_and_model_info(store: ModelStore, tiny_gguf: Path) -> None:
    create(store, "tiny", f'FROM {tiny_gguf}\nSYSTEM "Be kind."\nPARAMETER stop <end>\nPARAMETER stop <eot>\nPARAMETER temperature 0.7\nMESSAGE user hi')
    show = store.show("tiny")
    blob = store.find("tiny").model_path
    assert f"FROM {blob}\n" in show.modelfile
    assert show.modelfile.startswith('# Modelfile generated by "ollama show"')
    assert "PARAMETER stop <end>\nPARAMETER stop <eot>" in show.modelfile
    assert show.parameters.splitlines() == [
        'stop                           "<end>"',
        'stop                           "<eot>"',
        "temperature                    0.7",
    ]
    assert show.system == "Be kind."
    assert show.template == "{% for m in messages %}{{ m.content }}{% endfor %}"  # the GGUF's own
    assert capabilities(store.find("tiny")) == ["completion"]
    assert show.model_info["general.architecture"] == "llama"
    assert show.model_info["llama.context_length"] == 256
    assert show.model_info["general.parameter_count"] == 104
    assert "general.name" not in show.model_info and "tokenizer.chat_template" not in show.model_info
    assert show.model_info["tokenizer.ggml.tokens"] == []
    assert show.messages[0].content == "hi"
    assert len(store.show("tiny", verbose=True).model_info["tokenizer.ggml.tokens"]) == 12


def test_show_of_an_embedding_model_says_embedding(store: ModelStore, tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "emb.gguf", arch="bert", embedding=True)
    create(store, "emb", f"FROM {path}")
    assert capabilities(store.find("emb")) == ["embedding"]


def test_show_modelfile_can_recreate_the_model(store: ModelStore, tiny_gguf: Path) -> None:
    create(store, "a", f'FROM {tiny_gguf}\nTEMPLATE """{{{{ .System }}}}\n{{{{ .Prompt }}}}"""\nPARAMETER num_ctx 64')
    create(store, "b", store.show("a").modelfile)
    assert store.find("b").manifest.layers == store.find("a").manifest.layers


def test_store_reads_a_manifest_written_by_ollama(store: ModelStore, tiny_gguf: Path) -> None:
    """A model laid out by Ollama itself (its JSON, its legacy 'prompt' layer) lists and shows."""
    model = store.blobs.import_file(tiny_gguf)
    prompt = store.blobs.write_bytes(b"[INST] {{ .Prompt }} [/INST]")
    config = store.blobs.write_bytes(
        b'{"model_format":"gguf","model_family":"llama","model_families":["llama"],"model_type":"8.0B",'
        b'"file_type":"Q4_0","architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}\n'
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config, "size": 10},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": model, "size": 1, "from": "/x/y"},
            {"mediaType": "application/vnd.ollama.image.prompt", "digest": prompt, "size": 2},
        ],
    }
    path = store.manifests_dir / "registry.ollama.ai/library/mistral/7b"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest, indent=2))
    (path.parent / ".tmp-om-1-abc").write_text("{not json")  # a stray temp file is ignored

    [listed] = store.list().models
    assert listed.name == "mistral:7b"
    assert listed.details.parameter_size == "8.0B" and listed.details.quantization_level == "Q4_0"
    assert store.show("mistral:7b").template == "[INST] {{ .Prompt }} [/INST]"


def test_unreadable_manifest_is_skipped_not_fatal(store: ModelStore, tiny_gguf: Path, caplog) -> None:
    create(store, "good", f"FROM {tiny_gguf}")
    bad = store.manifests_dir / "registry.ollama.ai/library/broken/latest"
    bad.parent.mkdir(parents=True)
    bad.write_text("{truncated")
    assert [m.name for m in store.list().models] == ["good:latest"]
    assert "broken" in caplog.text


def test_blob_with_wrong_digest_is_refused_and_leaves_nothing(store: ModelStore) -> None:
    wrong = "sha256:" + hashlib.sha256(b"other").hexdigest()
    with pytest.raises(DigestMismatch, match="digest mismatch"):
        store.blobs.import_chunks([b"some ", b"data"], expected=wrong)
    assert list(store.blobs.directory.iterdir()) == []


def test_blob_with_right_digest_is_stored_under_it(store: ModelStore) -> None:
    right = "sha256:" + hashlib.sha256(b"some data").hexdigest()
    assert store.blobs.import_chunks([b"some ", b"data"], expected=right.upper().replace("SHA256", "sha256")) == right
    assert store.blobs.path(right).read_bytes() == b"some data"


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "0" * 32, "sha256:" + "g" * 64, "0" * 64, "sha256:../../x"])
def test_bad_digests_are_refused(bad: str) -> None:
    with pytest.raises(InvalidDigest):
        parse_digest(bad)


def test_default_root_honours_ollama_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "x"))
    assert ModelStore().root == tmp_path / "x"
    monkeypatch.delenv("OLLAMA_MODELS")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    root = ModelStore().root
    assert root == tmp_path / "data" / "ollama-magic" / "models"
    assert ".ollama" not in root.parts


def test_blob_files_are_world_readable(store: ModelStore, tiny_gguf: Path) -> None:
    digest = store.blobs.import_file(tiny_gguf)
    assert os.stat(store.blobs.path(digest)).st_mode & 0o777 == 0o644


def test_gguf_header_and_text_blobs_are_read_once_per_blob(store: ModelStore, tiny_gguf: Path) -> None:
    from ollama_magic.store import blobs, gguf_meta

    create(store, "a", f"FROM {tiny_gguf}\nSYSTEM be brief")
    create(store, "b", "FROM a")  # the same weights blob under another name
    gguf_meta.gguf_header.cache_clear()
    blobs.blob_text.cache_clear()
    infos = [store.find(name).gguf_info() for name in ("a", "b", "a")]
    assert infos[0] is infos[1] is infos[2]  # one parse of the header for the three lookups
    assert gguf_meta.gguf_header.cache_info().misses == 1
    assert [store.find("a").system, store.find("b").system] == ["be brief", "be brief"]
    assert blobs.blob_text.cache_info().misses == 1
    verbose = store.find("a").gguf_info(full_arrays=True)  # show --verbose: its own full parse, not kept
    assert verbose is not infos[0] and len(verbose.metadata["tokenizer.ggml.tokens"]) == 12


def _no_colon_below(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if ":" in p.name]


def test_on_windows_a_registry_port_never_becomes_a_colon_in_a_directory_name(
        store: ModelStore, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """NTFS refuses ``:`` in a name, so ``localhost:5000/ns/tiny`` is stored under ``localhost%5000``
    there (ollama/ollama#4088) and still listed, found, copied and removed under its own name."""
    from ollama_magic import names

    monkeypatch.setattr(names, "PORT_SEPARATOR_ON_DISK", "%")
    create(store, "localhost:5000/ns/tiny", f"FROM {tiny_gguf}")
    store.copy("localhost:5000/ns/tiny", "localhost:5000/ns/tiny:v2")
    assert _no_colon_below(store.root) == []
    assert (store.manifests_dir / "localhost%5000" / "ns" / "tiny" / "latest").is_file()
    assert sorted(m.name for m in store.list().models) == ["localhost:5000/ns/tiny:latest", "localhost:5000/ns/tiny:v2"]
    assert store.find("LOCALHOST:5000/ns/tiny").name.short == "localhost:5000/ns/tiny:latest"
    store.delete("localhost:5000/ns/tiny:v2")
    store.delete("localhost:5000/ns/tiny")
    assert store.list().models == [] and not (store.manifests_dir / "localhost%5000").exists()


@pytest.mark.parametrize("host_dir", ["localhost:5000", "localhost%5000"])
def test_a_port_host_manifest_is_found_in_either_spelling(store: ModelStore, tiny_gguf: Path, host_dir: str) -> None:
    """A store Ollama wrote on Linux (``localhost:5000``) and one written on Windows (``localhost%5000``)
    are read alike; a pull or create over the name writes over that same manifest, not beside it."""
    create(store, "tiny", f"FROM {tiny_gguf}")
    written = store.manifests_dir / host_dir / "ns" / "tiny" / "latest"
    written.parent.mkdir(parents=True)
    written.write_bytes(store.find("tiny").manifest_path.read_bytes())
    assert store.find("localhost:5000/ns/tiny").manifest_path == written
    assert "localhost:5000/ns/tiny:latest" in [m.name for m in store.list().models]
    store.install_manifest(store.find("localhost:5000/ns/tiny").name, written.read_bytes())
    store.copy("tiny", "localhost:5000/ns/tiny")
    assert sorted(p.name for p in store.manifests_dir.iterdir()) == sorted(["registry.ollama.ai", host_dir])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux layout")
def test_on_linux_the_data_directory_stays_where_existing_users_have_it(monkeypatch: pytest.MonkeyPatch,
                                                                        tmp_path: Path) -> None:
    """platformdirs chooses each OS's place; on Linux that is where earlier versions kept the models."""
    from ollama_magic.files import data_dir

    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_dir() == tmp_path / ".local" / "share" / "ollama-magic"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "ollama-magic"


def test_an_adapter_named_by_a_local_path_over_http_is_refused_as_an_adapter(store: ModelStore, tiny_gguf: Path) -> None:
    """The refusal names the line that was wrong: an ADAPTER line, not FROM (which was fine)."""
    create(store, "base", f"FROM {tiny_gguf}")
    digest = store.find("base").manifest.layers[0].digest
    with pytest.raises(InvalidRequest, match="uploaded first") as refused:
        create(store, "x", f"FROM {digest}\nADAPTER {tiny_gguf}", trusted=False)
    assert str(refused.value).startswith(f"ADAPTER {str(tiny_gguf)!r}:")
    with pytest.raises(InvalidRequest, match="uploaded first") as refused:
        create(store, "x", CreateRequest(files={"model.gguf": str(tiny_gguf)}), trusted=False)
    assert "FROM" not in str(refused.value)  # a 'files' entry is not a FROM line either
