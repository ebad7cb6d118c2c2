"""Where a training step's time goes on this CPU, and how far each part is from the matmul roof.

The bare torch loop of `bench.train_throughput` (same model, examples, step plan, optimizer and
precision as a fit) runs under torch.profiler for every step after the first, once per batch
size. The profile's self CPU time is grouped into matrix products (mm/addmm/bmm: their FLOPs are
counted by the profiler), attention, the loss (log-softmax and NLL over the vocabulary), the
optimizer step, dtype casts, and everything else; the matrix products' own FLOP/s is compared with
the matmul roof (`pipeline.roofline`), as is the whole step's cost-model rate (6 x params x
tokens). Prints a Markdown table with the CPU capability.

    DS_ACCELERATOR=cpu python -m bench.train_profile --precision fp32 --batch-sizes 8 32
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

#: profiler op name -> category; ops not listed are "other" (elementwise, norms, embedding, ...)
CATEGORIES = {
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",
                  "aten::_scaled_dot_product_flash_attention_for_cpu_backward"),
    "loss": ("aten::_log_softmax", "aten::_log_softmax_backward_data", "aten::nll_loss_forward",
             "aten::nll_loss_backward"),
    "optimizer": ("aten::_fused_adamw_",),
    "casts": ("aten::copy_", "aten::_to_copy"),
}


def categorize(averages) -> dict[str, dict[str, float]]:
    """category -> {"seconds": self CPU seconds, "flops": FLOPs the profiler counted} over the profile."""
    out = {name: {"seconds": 0.0, "flops": 0.0} for name in [*CATEGORIES, "other"]}
    by_op = {op: name for name, ops in CATEGORIES.items() for op in ops}
    for event in averages:
        name = by_op.get(event.key, "other")
        out[name]["seconds"] += event.self_cpu_time_total / 1e6
        out[name]["flops"] += float(getattr(event, "flops", 0) or 0)
    return out


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model reference (default: the embedded model)")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per batch size (the first is not profiled)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="fp32")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error("--steps must be at least 2 (the first step is not profiled)")

    import torch

    from bench.train_throughput import bare_loop, rows_for
    from pipeline.models import resolve
    from pipeline.report.inputs import parameter_count
    from pipeline.roofline import roof
    from pipeline.train.config import TrainConfig

    threads = os.cpu_count() or 1
    model_path = str(resolve(args.model))
    params, ceiling = parameter_count(Path(model_path)), roof(args.precision, threads)
    print(f"model {args.model} ({params / 1e6:.0f}M parameters), {args.precision}, {threads} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, {args.precision} matmul roof {ceiling.flops_per_s / 1e9:.1f} GFLOP/s")
    print("| batch | tokens/step | s/step | step GFLOP/s (6PT) | of roof | "
          + " | ".join(f"{c} share" for c in [*CATEGORIES, "other"]) + " | matmul GFLOP/s | matmul of roof |")
    print("|---" * (8 + len(CATEGORIES)) + "|")
    for batch in args.batch_sizes:
        train = TrainConfig(batch_size=batch, bf16=args.precision == "bf16", lr=1e-4, max_steps=args.steps)
        rows, _ = rows_for(args.model, args.steps, batch, 1)
        r = bare_loop(model_path, train, rows, threads, profile=True)
        parts = categorize(r["profile"])
        total = sum(p["seconds"] for p in parts.values())
        steps = args.steps - 1
        per_step = r["steps_s"] / steps
        step_rate = 6.0 * params * r["tokens"] / r["steps_s"]
        mm = parts["matmul"]
        mm_rate = mm["flops"] / mm["seconds"] if mm["seconds"] else 0.0
        shares = " | ".join(f"{parts[c]['seconds'] / total:.0%}" for c in [*CATEGORIES, "other"])
        print(f"| {batch} | {r['tokens'] / steps:.0f} | {per_step:.2f} | {step_rate / 1e9:.1f} | "
              f"{step_rate / ceiling.flops_per_s:.0%} | {shares} | {mm_rate / 1e9:.1f} | {mm_rate / ceiling.flops_per_s:.0%} |",
              flush=True)


if __name__ == "__main__":
    main()
