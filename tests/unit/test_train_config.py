"""Train config validation, the DeepSpeed config, the LR schedule and the model check."""

import pytest

from pipeline.config import ConfigError, validate_config
from pipeline.models import ModelError, check_trainable
from pipeline.train.config import TrainConfig
from pipeline.train.engine import bf16_supported, deepspeed_config, lr_factor, use_bf16


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"train\.batch_size: 6 is not divisible by train\.num_workers 4"):
        validate_config({"name": "r", "train": {"batch_size": 6, "num_workers": 4}})
    with pytest.raises(ConfigError, match=r"train\.lora: LoRA with train\.zero_stage 3 is not supported"):
        validate_config({"name": "r", "train": {"zero_stage": 3, "lora": {}}})
    with pytest.raises(ConfigError, match=r"train\.zero_stage"):
        validate_config({"name": "r", "train": {"zero_stage": 4}})
    with pytest.raises(ConfigError, match=r"train\.lora\.export"):
        validate_config({"name": "r", "train": {"lora": {"export": "both"}}})


def test_deepspeed_config_never_uses_fp16_and_splits_the_batch():
    ds = deepspeed_config(TrainConfig(batch_size=8, num_workers=2, zero_stage=3), num_workers=2, bf16=True)
    assert ds["train_batch_size"] == 8 and ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["zero_optimization"]["stage"] == 3 and ds["zero_allow_untested_optimizer"] is True
    assert ds["bf16"] == {"enabled": True} and ds["fp16"] == {"enabled": False}
    assert "optimizer" not in ds  # the torch AdamW is passed in as a client optimizer
    assert deepspeed_config(TrainConfig(), 1, bf16=False)["bf16"] == {"enabled": False}


@pytest.mark.parametrize("amx, avx512_bf16, expected", [(True, True, True), (False, True, False), (False, False, False)])
def test_auto_bf16_on_cpu_only_with_amx(monkeypatch, amx, avx512_bf16, expected):
    import torch

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert bf16_supported(use_gpu=False) is expected
    assert use_bf16(TrainConfig(bf16="auto")) is expected
    assert use_bf16(TrainConfig(bf16=True)) is True and use_bf16(TrainConfig(bf16=False)) is False


def test_lr_schedule_warms_up_then_decays_to_zero():
    total, warmup = 100, 10
    ramp = [lr_factor(s, total, warmup, "cosine") for s in range(warmup + 1)]
    assert ramp == sorted(ramp) and ramp[0] < 0.2 and ramp[-1] == 1.0
    assert lr_factor(55, total, warmup, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, total, warmup, "cosine") == pytest.approx(0.0)
    assert lr_factor(55, total, warmup, "linear") == pytest.approx(0.5)
    assert lr_factor(99, total, warmup, "constant") == 1.0


def test_check_trainable_rejects_unloadable_models_and_missing_lora_targets(tmp_path, tiny_model_dir):
    check_trainable(tiny_model_dir, ["q_proj", "v_proj"])
    with pytest.raises(ModelError, match=r"train\.lora\.target_modules: \['qkv'\] are not modules"):
        check_trainable(tiny_model_dir, ["q_proj", "qkv"])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    with pytest.raises(ModelError, match="cannot build a causal LM"):
        check_trainable(broken)
    import shutil

    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_model_dir, no_weights, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ModelError, match=r"no \*\.safetensors weights"):
        check_trainable(no_weights)
    truncated = tmp_path / "truncated"
    shutil.copytree(tiny_model_dir, truncated)
    (truncated / "model.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(ModelError, match="unreadable safetensors file"):
        check_trainable(truncated)


def test_hub_model_not_in_the_local_cache_is_a_clear_error(monkeypatch, tmp_path):
    from pipeline.section import ModelConfig
    from pipeline.models import local_model_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelError, match=r"'nobody/no-such-model': not in the local Hugging Face cache.*allow_download"):
        local_model_folder(ModelConfig(ref="nobody/no-such-model"))
    assert local_model_folder(ModelConfig(ref="tiny-random")).joinpath("config.json").is_file()
