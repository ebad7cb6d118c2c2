"""Fine-tuning side by side with TRL: Ray Train + DeepSpeed (ZeRO-0, 1 worker) vs TRL's `SFTTrainer`.

Same model, same examples in the same micro-batches and order (our length-bucketed step plan,
fed to TRL pre-tokenized with a sequential sampler, so every step sees the same rows), same
steps and batch size, fused torch AdamW, peak LR, cosine schedule, clipping and torch threads;
every token carries the loss on both sides. bf16: DeepSpeed computes on bf16 weights with fp32
master weights; TRL (the HF Trainer) keeps fp32 weights under `torch.autocast(bfloat16)`.
Tokens/s counts real tokens over the training steps only (setup apart) on both sides. Needs the
`bench` extra (`pip install -e '.[bench]'`).

    DS_ACCELERATOR=cpu python -m bench.peer_training                        # embedded model
    DS_ACCELERATOR=cpu python -m bench.peer_training --model tiny-random --steps 4 --batch-size 4
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.train_throughput import ray_fit, rows_for
from pipeline.report.inputs import parameter_count
from pipeline.roofline import fraction, roof


def plan_examples(rows: list[dict]) -> list[list[int]]:
    """The plan's micro-batches unpadded back into examples, in step order."""
    out = []
    for row in rows:
        for r, n in enumerate(row["lengths"]):
            out.append(row["input_ids"][r * row["width"]:r * row["width"] + n])
    return out


def trl_fit(model_path: str, train, rows: list[dict], threads: int, out_dir: str) -> dict:
    """TRL's SFTTrainer over the same rows: tokens/s over the steps, final loss."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PrinterCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from pipeline.models import load_tokenizer

    class StepClock(TrainerCallback):
        start = end = None

        def on_step_begin(self, args, state, control, **kw):
            self.start = self.start or time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.end = time.perf_counter()

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    setup = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, use_safetensors=True)
    model.config.use_cache = False
    steps = len(rows)
    config = SFTConfig(
        output_dir=out_dir, max_steps=steps, per_device_train_batch_size=train.batch_size, gradient_accumulation_steps=1,
        learning_rate=train.lr, lr_scheduler_type=train.lr_schedule, warmup_steps=int(train.warmup_ratio * steps),
        weight_decay=train.weight_decay, max_grad_norm=train.grad_clip, optim="adamw_torch_fused",
        bf16=bool(train.bf16), use_cpu=True, logging_steps=1, save_strategy="no", report_to=[],
        train_sampling_strategy="sequential", dataloader_num_workers=0, seed=0,
        dataset_kwargs={"skip_prepare_dataset": True}, disable_tqdm=True,
    )
    clock = StepClock()
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_dict({"input_ids": plan_examples(rows)}),
                         processing_class=load_tokenizer(model_path), callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # it prints every step's log dict
    setup = time.perf_counter() - setup
    trainer.train()
    tokens = sum(sum(r["lengths"]) for r in rows)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"tokens_per_s": tokens / (clock.end - clock.start), "setup_s": setup, "final_loss": losses[-1],
            "steps": trainer.state.global_step}


def compare(model_path: str, model_ref: str, steps: int, batch_size: int, precision: str, threads: int, storage: str) -> dict:
    """One fit each way on the same plan (Ray must be initialized): label -> result."""
    from pipeline.train.config import TrainConfig

    train = TrainConfig(batch_size=batch_size, bf16=precision == "bf16", lr=1e-4, max_steps=steps, zero_stage=0, num_workers=1)
    rows, _ = rows_for(model_ref, steps, batch_size, 1)
    ours = ray_fit(model_path, train, rows, threads, storage, f"peer-{precision}-{time.monotonic_ns()}")
    theirs = trl_fit(model_path, train, rows, threads, os.path.join(storage, "trl"))
    return {"ours": ours, "trl": theirs, "tokens": sum(sum(r["lengths"]) for r in rows)}


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before DeepSpeed is imported: no CUDA probe on CPU
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", nargs="+", choices=["bf16", "fp32"], default=["bf16", "fp32"])
    parser.add_argument("--repeats", type=int, default=1, help="interleaved fits per side; the fastest is reported")
    args = parser.parse_args(argv)

    import ray
    import torch

    from pipeline.models import resolve

    threads = os.cpu_count() or 1
    model_path = str(resolve(args.model))
    ray.init(num_cpus=threads, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"DS_ACCELERATOR": os.environ["DS_ACCELERATOR"]}})
    table = []
    with tempfile.TemporaryDirectory(prefix="bench-peer-train-") as storage:
        for precision in args.precision:
            runs = [compare(model_path, args.model, args.steps, args.batch_size, precision, threads, storage)
                    for _ in range(args.repeats)]
            best = {side: max((r[side] for r in runs), key=lambda x: x["tokens_per_s"]) for side in ("ours", "trl")}
            table.append((precision, best, runs[0]["tokens"]))
    ray.shutdown()

    params = parameter_count(Path(model_path))
    print(f"\nmodel {args.model}, {args.steps} steps x {args.batch_size} examples, 1 process x {threads} threads, "
          f"best of {args.repeats}; CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| precision | trainer | tokens/s | vs TRL | setup s | final loss | GFLOP/s (6 x params x tokens) | of roof |")
    print("|---|---|---|---|---|---|---|---|")
    for precision, best, tokens in table:
        ceiling = roof(precision, threads)
        for side, label in (("trl", "TRL SFTTrainer"), ("ours", "Ray Train + DeepSpeed ZeRO-0")):
            r = best[side]
            achieved, share = fraction(6.0 * params * r["tokens_per_s"], 1.0, ceiling)
            print(f"| {precision} | {label} | {r['tokens_per_s']:.1f} | {r['tokens_per_s'] / best['trl']['tokens_per_s']:.2f}x | "
                  f"{r['setup_s']:.1f} | {r['final_loss']:.3f} | {achieved / 1e9:.1f} | {share:.0%} |")
    print(f"(roof: {', '.join(f'{p} {roof(p, threads).flops_per_s / 1e9:.0f} GFLOP/s' for p, _, _ in table)})")


if __name__ == "__main__":
    main()
