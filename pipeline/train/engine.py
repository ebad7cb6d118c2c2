"""The DeepSpeed engine of one worker: model (full or LoRA), torch AdamW, LR schedule, ZeRO config.

On CPU, DeepSpeed runs with `DS_ACCELERATOR=cpu` over the gloo process group Ray Train made
(`dist_init_required=False`); the optimizer is a torch AdamW passed in as a client optimizer
(a DeepSpeed optimizer type would compile C++ ops), which ZeRO accepts with
`zero_allow_untested_optimizer`. bf16 keeps fp32 master weights in the optimizer; fp16 is
never used.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os

from pipeline.train.config import TrainConfig
from pipeline.train.jit_ops import load_shm_op

log = logging.getLogger(__name__)


def bf16_supported(use_gpu: bool) -> bool:
    """Whether bf16 pays on this process's hardware: a GPU that supports it, or a CPU whose bf16
    matmul roof is well above its fp32 one at this process's torch threads
    (`pipeline.roofline.bf16_pays`: AMX, some AVX512-BF16 CPUs; not an AVX512-BF16 CPU whose
    bf16 products run slower than fp32, nor AVX2, which emulates bf16)."""
    import torch

    if use_gpu:
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    from pipeline.roofline import bf16_pays

    return bf16_pays(torch.get_num_threads())


def use_bf16(train: TrainConfig) -> bool:
    return bf16_supported(train.use_gpu) if train.bf16 == "auto" else bool(train.bf16)


def on_every_worker(flag: bool, num_workers: int, use_gpu: bool) -> bool:
    """True only where every worker of the fit says True (collective: call on every rank). With
    `auto` each worker judges its own hardware, and ranks that reduce gradients together must
    agree on their dtype: a cluster mixing CPUs where bf16 pays with ones where it does not trains
    in fp32."""
    if num_workers == 1:
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([int(flag)], device="cuda" if use_gpu else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def deepspeed_config(train: TrainConfig, num_workers: int, bf16: bool) -> dict:
    zero: dict = {"stage": train.zero_stage}
    if train.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_batch_size": train.batch_size,
        "train_micro_batch_size_per_gpu": train.batch_size // num_workers,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": train.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    raise ValueError(f"train.lr_schedule {schedule!r}: expected cosine, linear or constant")


def peft_lora_config(train: TrainConfig):
    from peft import LoraConfig as PeftLoraConfig

    lora = train.lora
    return PeftLoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules), task_type="CAUSAL_LM",
    )


def build_model(model_path: str, train: TrainConfig):
    """The model to train, in float32 (DeepSpeed casts to bf16 itself), LoRA-wrapped if configured."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, use_safetensors=True)
    model.config.use_cache = False
    if train.lora is not None:
        from peft import get_peft_model

        model = get_peft_model(model, peft_lora_config(train))
    return model


def build_engine(model_path: str, train: TrainConfig, total_steps: int, num_workers: int):
    """(engine, bf16) ready to train; call inside a Ray Train worker (the process group exists)."""
    import torch

    if not train.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed

    bf16 = on_every_worker(use_bf16(train), num_workers, train.use_gpu)
    model = build_model(model_path, train)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in trainable if p.ndim >= 2], "weight_decay": train.weight_decay},
        {"params": [p for n, p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    # fused: one kernel over all parameters (on 2 CPU cores the AdamW step of a 135M model took
    # about a fifth of the default foreach version's time)
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=train.lr, fused=True)
    warmup = int(train.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, train.lr_schedule)
    )
    notices = io.StringIO()
    with contextlib.redirect_stdout(notices):  # DeepSpeed prints its op-build notices; they go to debug
        if not train.use_gpu:
            load_shm_op()  # compiled on first use; a build killed earlier must not hang this one
        engine, _, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler,
            config=deepspeed_config(train, num_workers, bf16), dist_init_required=False,
        )
    for line in notices.getvalue().splitlines():
        log.debug(line)
    if train.zero_stage == 0 and num_workers == 1:
        # a single data-parallel rank has nothing to all-reduce, yet DeepSpeed would still flatten
        # every gradient into a buffer, "reduce" it over the one-rank group and copy it back
        engine.enable_backward_allreduce = False
    return engine, bf16
