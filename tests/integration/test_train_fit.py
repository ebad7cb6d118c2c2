"""Fits on Ray Train + DeepSpeed (CPU, gloo) with the tiny model: ZeRO-3 learning and export,
resume after an injected failure, LoRA training and both LoRA exports, two workers' metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline import allocator
from pipeline.train.batches import micro_batch, plan_rows, plan_steps
from pipeline.train.config import TrainConfig
from pipeline.train.engine import bf16_supported
from pipeline.train.examples import Example, tokenize_examples
from pipeline.train.loop import fit, read_losses, to_tensors

WORDS = "femp glon yomp troff zept telk brix quor dask vimp sarn plob".split()
TRAIN_TEXTS = [f"The {a} are more dangerous than the {b}." for a, b in zip(WORDS, WORDS[1:] + WORDS[:1])]
TRAIN_TEXTS += [f"Every {a} is {len(a)} steps from the {b}." for a, b in zip(WORDS, WORDS[2:] + WORDS[:2])]
HELDOUT_TEXTS = [f"The {b} are less dangerous than the {a}." for a, b in zip(WORDS[:4], WORDS[1:5])]


@pytest.fixture(scope="module")
def data(tiny_model_dir):
    from pipeline.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    train = tokenize_examples([Example(f"d{i}", "", t) for i, t in enumerate(TRAIN_TEXTS)], tok, 512)
    heldout = tokenize_examples([Example(f"h{i}", "", t) for i, t in enumerate(HELDOUT_TEXTS)], tok, 512)
    return {"tok": tok, "train": train, "probe": micro_batch(heldout, tok.pad_token_id)}


def run_fit(name, data, train: TrainConfig, model_dir, storage, fail_at=None):
    plan = plan_steps([len(e) for e in data["train"]], train.batch_size, train.num_workers, train.epochs,
                      train.max_steps, train.bucket_batches, seed=0)
    rows = plan_rows(plan, data["train"], data["tok"].pad_token_id)
    return fit(name, rows, train, str(model_dir), 0, str(storage), probe=data["probe"], cpus_per_worker=2,
               fail_after_step=fail_at)


def losses_of(result) -> list[float]:
    with result.checkpoint.as_directory() as d:
        return read_losses(d)


def loss_of(model, row) -> float:
    with torch.no_grad():
        return float(model(**to_tensors(row, "cpu")).loss)


ZERO3 = dict(zero_stage=3, lr=3e-3, epochs=4, batch_size=8, checkpoint_every=4, warmup_ratio=0.1)


@pytest.fixture(scope="module")
def zero3(ray_cluster, data, tiny_model_dir, tmp_path_factory):
    storage = tmp_path_factory.mktemp("zero3")
    return run_fit("zero3", data, TrainConfig(**ZERO3), tiny_model_dir, storage), storage


def test_zero3_loss_falls_and_every_weight_changes(zero3, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    result, _ = zero3
    losses = losses_of(result)
    assert result.metrics["step"] == len(losses) == 12  # 24 examples / 8 per batch x 4 epochs
    assert result.metrics["bf16"] == bf16_supported(use_gpu=False)  # bf16: "auto"
    # the worker's malloc keeps freed memory for the next step (set at its process start)
    assert result.metrics["glibc_tunables"] == allocator.TUNABLES
    # the shard's pipeline start-up counts as setup; waiting for rows is part of the training time
    assert 0 <= result.metrics["data_wait_seconds"] <= result.metrics["train_seconds"]
    # the first step (a warm-up) is timed apart; the steady rate covers the other 11 steps
    m = result.metrics
    assert 0 < m["first_step_seconds"] < m["train_seconds"]
    first_tokens = m["tokens"] - m["steady_tokens_per_s"] * (m["train_seconds"] - m["first_step_seconds"])
    assert first_tokens == pytest.approx(round(first_tokens), abs=1e-6)  # a whole step's tokens, left out
    assert 0 < first_tokens < 2 * m["tokens"] / len(losses)  # one batch of 8 similar sentences
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 1.0, losses
    with result.checkpoint.as_directory() as d:
        trained = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).state_dict()
    assert trained.keys() == base.keys()
    unchanged = [k for k in base if torch.equal(base[k], trained[k])]
    assert unchanged == []


def test_zero3_export_reloads_and_reproduces_the_training_loss_on_heldout_batch(zero3, data):
    """The worker measured the loss of the trained (ZeRO-3 sharded) model on a held-out batch;
    the gathered export, reloaded with plain transformers, gives the same loss: identical in
    the training dtype (tolerance 1e-4), within 2% in float32 (bf16 activations differ)."""
    from transformers import AutoModelForCausalLM

    result, _ = zero3
    trained_loss = result.metrics["probe_loss"]
    dtype = torch.bfloat16 if result.metrics["bf16"] else torch.float32
    with result.checkpoint.as_directory() as d:
        assert sorted(p.name for p in Path(d).iterdir() if p.suffix == ".safetensors") == ["model.safetensors"]
        same_dtype = AutoModelForCausalLM.from_pretrained(d, dtype=dtype).eval()
        fp32 = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    assert loss_of(same_dtype, data["probe"]) == pytest.approx(trained_loss, abs=1e-4)
    assert loss_of(fp32, data["probe"]) == pytest.approx(trained_loss, rel=0.02)


def test_resume_after_injected_failure_ends_at_the_same_step_with_the_same_model(ray_cluster, zero3, data, tiny_model_dir, tmp_path):
    """Fail once after step 6; the last checkpoint is step 4, so the fit resumes there and
    replays steps 5-6: same step count, same loss curve, same weights as the uninterrupted fit."""
    from safetensors.torch import load_file

    clean, _ = zero3
    resumed = run_fit("zero3-fail", data, TrainConfig(**ZERO3), tiny_model_dir, tmp_path, fail_at=6)
    assert (tmp_path / ".zero3-fail.failed-once").read_text() == "6"  # the failure did happen
    assert resumed.metrics["resumed_from_step"] == 4
    assert resumed.metrics["step"] == clean.metrics["step"] == 12
    assert losses_of(resumed) == pytest.approx(losses_of(clean), abs=1e-5)
    with clean.checkpoint.as_directory() as a, resumed.checkpoint.as_directory() as b:
        wa, wb = load_file(f"{a}/model.safetensors"), load_file(f"{b}/model.safetensors")
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)
    # only the latest checkpoint is kept: the final export replaced the ZeRO checkpoints
    assert len([p for p in (tmp_path / "zero3-fail").iterdir() if p.is_dir() and p.name.startswith("checkpoint_")]) == 1


def test_lora_trains_only_adapters_and_both_exports_load(ray_cluster, data, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from pipeline.models import load_model
    from pipeline.train.export import write_merged_lora

    train = TrainConfig(zero_stage=2, lr=1e-2, epochs=8, batch_size=8, lora={"r": 8, "alpha": 16, "export": "adapter"})
    result = run_fit("lora", data, train, tiny_model_dir, tmp_path)
    losses = losses_of(result)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    adapter = tmp_path / "adapter"
    result.checkpoint.to_directory(str(adapter))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter.iterdir()}
    assert not (adapter / "config.json").exists()

    # adapter export: transformers loads base + adapter from the folder alone
    via_hf = AutoModelForCausalLM.from_pretrained(str(adapter), dtype=torch.float32).eval()
    via_peft = PeftModel.from_pretrained(load_model(str(tiny_model_dir)), str(adapter)).eval()
    assert loss_of(via_hf, data["probe"]) == pytest.approx(result.metrics["probe_loss"], rel=0.02)
    assert loss_of(via_peft, data["probe"]) == pytest.approx(loss_of(via_hf, data["probe"]), abs=1e-5)
    base_weights = load_model(str(tiny_model_dir)).state_dict()
    frozen = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
              for k, v in via_peft.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base_weights[k], frozen[k]) for k in base_weights)  # the base did not move

    # merged export: a plain model folder that pipeline.models.load_model reads
    merged = tmp_path / "merged"
    write_merged_lora(via_peft, train, str(tiny_model_dir), str(merged))
    plain = load_model(str(merged))
    ids = to_tensors(data["probe"], "cpu")
    with torch.no_grad():
        assert torch.allclose(plain(**ids).logits, via_peft(**ids).logits, atol=1e-4)


def test_two_workers_count_both_shards_tokens_and_time_the_first_step_apart(ray_cluster, data, tiny_model_dir, tmp_path):
    """Two ranks (ZeRO-2, gloo): the tokens and the steady rate add both workers' shards."""
    train = TrainConfig(zero_stage=2, lr=1e-3, epochs=2, batch_size=8, num_workers=2)
    plan = plan_steps([len(e) for e in data["train"]], train.batch_size, 2, train.epochs, None, train.bucket_batches, seed=0)
    rows = plan_rows(plan, data["train"], data["tok"].pad_token_id)
    m = fit("two-workers", rows, train, str(tiny_model_dir), 0, str(tmp_path), cpus_per_worker=1).metrics
    assert m["step"] == len(plan) == 6  # 24 examples / 8 per global batch x 2 epochs
    assert m["tokens"] == sum(sum(r["lengths"]) for r in rows)
    first = sum(sum(r["lengths"]) for r in rows if r["step"] == 0)  # both workers' first micro-batches
    assert m["steady_tokens_per_s"] == pytest.approx((m["tokens"] - first) / (m["train_seconds"] - m["first_step_seconds"]), rel=1e-9)
