"""Config of the `train` stage: examples, hyperparameters, DeepSpeed/ZeRO, LoRA, Ray Train.

The training seed is the run's top-level `seed`. The defaults: full fine-tuning, bf16 where the
hardware has it, ZeRO stage 2 on one Ray Train worker that holds every CPU. configs/demo.yaml
trains shorter and harder (ZeRO stage 0, batch 8, 3 epochs, lr 5e-4; chosen in docs/controls.md).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.section import Section


class LoraConfig(Section):
    r: int = Field(16, gt=0, description="LoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (the update is scaled by alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
        description="Names of the linear layers that get adapters (matched against the end of "
        "each module's name); every name must exist in the model.",
    )
    export: Literal["merged", "adapter"] = Field(
        "merged",
        description="'merged': the adapters are folded into the base weights and a plain model "
        "folder is written; 'adapter': only adapter_config.json + adapter_model.safetensors "
        "(the evaluator loads the base model named in adapter_config.json, then the adapter).",
    )


class TrainConfig(Section):
    # ------------------------------------------------------------------ examples
    sentence_split: Literal["independent", "cumulative", "none"] = Field(
        "independent", description="How a multi-sentence document becomes training examples."
    )
    oracle_min_copies: int = Field(
        1, gt=0,
        description="FT+oracle: each oracle document is trained as often as the training documents "
        "state the least-stated fact it derives from, and at least this many times per epoch.",
    )
    # ------------------------------------------------------------------ optimisation
    lr: float = Field(3e-4, gt=0, description="Peak learning rate (AdamW).")
    batch_size: int = Field(8, gt=0, description="Global batch size in examples (split evenly over the workers).")
    epochs: int = Field(6, gt=0, description="Passes over the training examples.")
    max_steps: int | None = Field(
        None, gt=0, description="Stop after this many optimizer steps (default: as many as `epochs` needs)."
    )
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of the steps with a linear learning-rate warm-up.")
    lr_schedule: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Learning-rate decay after the warm-up (to zero for cosine and linear)."
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW decoupled weight decay.")
    grad_clip: float = Field(1.0, ge=0, description="Gradient-norm clipping; 0 turns it off.")
    bucket_batches: int = Field(
        16, gt=0,
        description="Length bucketing: examples are sorted by length inside windows of this many "
        "batches, so a batch holds examples of similar length and padding stays small.",
    )
    # ------------------------------------------------------------------ DeepSpeed
    zero_stage: Literal[0, 1, 2, 3] = Field(2, description="DeepSpeed ZeRO stage.")
    bf16: bool | Literal["auto"] = Field(
        "auto",
        description="bf16 weights and activations with fp32 master weights in the optimizer; "
        "'auto': on where bf16 is faster on the worker's hardware: a bf16-capable GPU, a CPU "
        "whose measured bf16 matmul roof is at least 1.5x its fp32 one (AMX, some AVX512-BF16 CPUs; "
        "measured once per machine and cached, `python -m pipeline.roofline`). fp16 is never used.",
    )
    lora: LoraConfig | None = Field(None, description="Train LoRA adapters instead of every weight; omit for full fine-tuning.")
    # ------------------------------------------------------------------ Ray Train
    num_workers: int = Field(1, gt=0, description="Ray Train workers (data-parallel ranks); on a GPU cluster one per GPU.")
    use_gpu: bool = Field(False, description="One GPU per worker (NCCL); otherwise CPU workers (gloo).")
    cpus_per_worker: int | None = Field(
        None, gt=0,
        description="CPUs (torch threads) per worker; default: 1 with GPUs, else the cluster's CPUs "
        "divided among the workers.",
    )
    checkpoint_every: int = Field(
        0, ge=0,
        description="Steps between resumable ZeRO checkpoints (model, optimizer, scheduler, "
        "step) reported to Ray Train; 0: none, so a failed worker restarts its condition from "
        "step 0. A checkpoint of a 135M model with Adam states is about 2 GB; only the latest is kept.",
    )
    max_failures: int = Field(2, ge=-1, description="Worker failures Ray Train recovers from per condition (-1: no limit).")
    storage_path: str | None = Field(
        None,
        description="Ray Train storage for checkpoints (a folder every node can read, or s3://...); "
        "default: <run>/train. Each condition's folder there is deleted once its model is exported.",
    )

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.batch_size % self.num_workers:
            raise ValueError(
                f"train.batch_size: {self.batch_size} is not divisible by train.num_workers "
                f"{self.num_workers}; each worker takes an equal share of a batch"
            )
        if self.lora is not None and self.zero_stage == 3:
            raise ValueError(
                "train.lora: LoRA with train.zero_stage 3 is not supported (ZeRO-3 would shard "
                "the frozen base weights, and the LoRA export reads them whole); use zero_stage 0, 1 or 2"
            )
        return self
