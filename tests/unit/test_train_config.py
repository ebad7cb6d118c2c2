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


@pytest.mark.parametrize("amx, avx512_bf16, bf16_roof, expected", [
    (False, False, None, False),  # AVX2: bf16 is emulated; nothing is measured
    (False, True, 106e9, False),  # AVX512-BF16 whose bf16 products run at 0.43x fp32's (measured, Intel)
    (False, True, 540e9, True),   # AVX512-BF16 at 2.2x (measured, AMD)
    (True, True, 1620e9, True),   # AMX at 6.6x
    (True, True, 360e9, False),   # 1.46x: below BF16_MIN_ROOF_RATIO
])
def test_auto_bf16_on_cpu_where_the_measured_bf16_roof_is_well_above_fp32(monkeypatch, amx, avx512_bf16, bf16_roof, expected):
    import torch

    from pipeline import roofline

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")  # as on any machine that runs this
    asked = []

    def roof(dtype, threads):
        asked.append((dtype, threads))
        return roofline.Roof(dtype, threads, 246e9 if dtype == "fp32" else bf16_roof, 2048, "k")

    monkeypatch.setattr(roofline, "roof", roof)
    assert bf16_supported(use_gpu=False) is expected
    assert use_bf16(TrainConfig(bf16="auto")) is expected
    assert use_bf16(TrainConfig(bf16=True)) is True and use_bf16(TrainConfig(bf16=False)) is False
    threads = torch.get_num_threads()
    assert asked == ([] if bf16_roof is None else [("bf16", threads), ("fp32", threads)] * 2)


def _agree(rank: int, port: int, flags: list[bool], out) -> None:
    import torch.distributed as dist

    from pipeline.train.engine import on_every_worker

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=len(flags))
    out.put((rank, on_every_worker(flags[rank], len(flags), use_gpu=False)))
    dist.destroy_process_group()


@pytest.mark.parametrize("flags, expected", [([True, True], True), ([True, False], False), ([False, False], False)])
def test_workers_agree_on_bf16_and_any_no_wins(flags, expected):
    import multiprocessing as mp

    from ports import free_port

    from pipeline.train.engine import on_every_worker

    assert on_every_worker(True, 1, use_gpu=False) is True and on_every_worker(False, 1, use_gpu=False) is False
    ctx = mp.get_context("spawn")
    out, port = ctx.Queue(), free_port()
    procs = [ctx.Process(target=_agree, args=(r, port, flags, out)) for r in range(len(flags))]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert got == {0: expected, 1: expected}


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
