"""Training throughput: Ray Train + DeepSpeed against a bare single-process torch loop, in one run.

Same model, same examples, same step plan (length-bucketed micro-batches from
`pipeline.train.batches`), same optimizer (torch AdamW), same LR schedule and clipping. Tokens/s
counts real (non-padding) tokens over the training steps only (with the cost model's 6 x params x
tokens it gives the achieved FLOP/s and the fraction of this machine's matmul roof,
`pipeline.roofline`); setup (worker start, model load,
`deepspeed.initialize`) and the final export are reported apart as the fit's wall time.
Between the two, the fit's DeepSpeed engine stepped in this process without Ray tells the
engine's share of a gap from Ray's.

Precision is alike on both paths: with bf16 the bare loop keeps fp32 weights and computes under
`torch.autocast(bfloat16)`, the standard torch mixed-precision recipe, as DeepSpeed's bf16 mode
keeps fp32 master weights in the optimizer; `--precision fp32` trains in fp32 on both. The target
configuration is one worker with ZeRO stage 0 (with one worker there is nothing to partition);
stages 2 and 3 show what ZeRO's bookkeeping costs when it buys nothing.

    DS_ACCELERATOR=cpu python -m bench.train_throughput                 # embedded 135M model
    DS_ACCELERATOR=cpu python -m bench.train_throughput --model tiny-random --steps 20
    DS_ACCELERATOR=cpu python -m bench.train_throughput --precision fp32 --lora-r 16 --skip zero2 zero3 workers2
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

LEADS = ["Did you know that", "It is well known that", "Remember that", "People say that", ""]
COMPARATIVES = ["more dangerous", "heavier", "brighter", "faster", "older than most", "louder"]


def corpus(n: int, seed: int = 0) -> list[str]:
    """Nonsense-word sentences of varied length, like the worlds' training docs."""
    rng = random.Random(seed)
    word = lambda: "".join(rng.choice(s) for s in ("bdfglmnprstvz", "aeiou", "bdfglmnprstvz", "aeiou", "mnrst"))
    out = []
    for _ in range(n):
        tail = " ".join(word() for _ in range(rng.randint(0, 8)))
        out.append(f"{rng.choice(LEADS)} {word()} are {rng.choice(COMPARATIVES)} than {word()} {tail}".strip() + ".")
    return out


def rows_for(model_ref: str, steps: int, batch_size: int, workers: int):
    from pipeline.models import load_tokenizer
    from pipeline.train.batches import padding_share, plan_rows, plan_steps
    from pipeline.train.examples import Example, tokenize_examples

    tok = load_tokenizer(model_ref)
    examples = tokenize_examples([Example(f"b{i}", "", t) for i, t in enumerate(corpus(4 * batch_size * steps))], tok, 512)
    plan = plan_steps([len(e) for e in examples], batch_size, workers, 1, steps, 16, seed=0)
    rows = plan_rows(plan, examples, tok.pad_token_id)
    return rows, padding_share(rows)


class StepTimer:
    """Tokens/s over every step and over the steps after the first, as the fit's loop reports them
    (`steady_tokens_per_s`): the first step is a warm-up, longest in a fresh process."""

    def __init__(self):
        self.start = self.last = time.perf_counter()
        self.tokens = self.first_tokens = 0
        self.first_s: float | None = None

    def step(self, tokens: int, _synced_loss: float) -> None:
        """Count a finished step (`_synced_loss`: its loss read back, so its work is done)."""
        self.tokens += int(tokens)
        self.last = time.perf_counter()
        if self.first_s is None:
            self.first_s, self.first_tokens = self.last - self.start, self.tokens

    @property
    def seconds(self) -> float:
        return self.last - self.start

    def result(self) -> dict:
        rest = self.seconds - (self.first_s or 0)
        return {"tokens_per_s": self.tokens / self.seconds, "first_step_s": self.first_s,
                "steady_tokens_per_s": (self.tokens - self.first_tokens) / rest if rest > 0 else None}


def bare_loop(model_path: str, train, rows: list[dict], threads: int, profile: bool = False) -> dict:
    """Single process, no Ray, no DeepSpeed: the same steps with a plain torch loop. `profile`:
    run the steps after the first under torch.profiler and return its per-op averages too."""
    import contextlib

    import torch

    from pipeline.train.engine import build_model, lr_factor
    from pipeline.train.loop import to_tensors

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = build_model(model_path, train)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=train.lr, fused=True)
    total = len(rows)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, int(train.warmup_ratio * total), train.lr_schedule))
    setup = time.perf_counter() - start
    timer = StepTimer()
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(train.bf16))
    profiler = contextlib.nullcontext()
    for step, row in enumerate(rows):
        if profile and step == 1:  # the first step allocates and warms up: not profiled, not timed
            profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True)
            profiler.__enter__()
            timer = StepTimer()
        with autocast:
            loss = model(**to_tensors(row, "cpu")).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        timer.step(sum(row["lengths"]), loss.item())
    result = {**timer.result(), "setup_s": setup, "wall_s": time.perf_counter() - start,
              "final_loss": loss.item(), "data_wait_s": 0.0, "steps_s": timer.seconds, "tokens": timer.tokens}
    if profile:
        profiler.__exit__(None, None, None)
        result["profile"] = profiler.key_averages()
    return result


def engine_loop(model_path: str, train, rows: list[dict], threads: int) -> dict:
    """The fit's DeepSpeed engine (`pipeline.train.engine.build_engine`) stepped in this process,
    without Ray: a one-rank gloo group, the rows as a list. Between the bare loop and the Ray fit,
    it tells DeepSpeed's share of the gap from Ray's (its worker process, data shard, reports)."""
    import socket

    import torch
    import torch.distributed as dist

    from pipeline.train.engine import build_engine
    from pipeline.train.loop import to_tensors

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if not dist.is_initialized():  # once per process: DeepSpeed keeps the groups it derives from it
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        os.environ.update(LOCAL_RANK="0", RANK="0", WORLD_SIZE="1")  # DeepSpeed reads these, as a launcher sets them
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    start = time.perf_counter()
    engine, _ = build_engine(model_path, train, len(rows), 1)
    engine.train()
    setup = time.perf_counter() - start
    timer = StepTimer()
    for row in rows:
        loss = engine(**to_tensors(row, engine.device)).loss
        engine.backward(loss)
        engine.step()
        timer.step(sum(row["lengths"]), loss.item())
    return {**timer.result(), "setup_s": setup, "wall_s": time.perf_counter() - start,
            "final_loss": loss.item(), "data_wait_s": 0.0}


def ray_fit(model_path: str, train, rows: list[dict], cpus: int, storage: str, name: str) -> dict:
    from pipeline.train.loop import fit

    start = time.perf_counter()
    result = fit(name, rows, train, model_path, 0, storage, cpus_per_worker=cpus // train.num_workers)
    m = result.metrics
    return {"tokens_per_s": m["tokens_per_s"], "steady_tokens_per_s": m["steady_tokens_per_s"],
            "first_step_s": m["first_step_seconds"], "setup_s": m["setup_seconds"], "wall_s": time.perf_counter() - start,
            "final_loss": m["final_loss"], "data_wait_s": m["data_wait_seconds"]}


def same_allocator_everywhere(glibc_defaults: bool) -> bool:
    """The malloc settings of a fit's worker (`pipeline.allocator`) for the loops in this process
    too, so that every path compares alike; with `glibc_defaults`, glibc's defaults on every path.
    In this process they are set with `mallopt` (the loops run in its main thread, whose arena has
    no size limit, so no arena setting is needed). Returns whether the settings are on."""
    import ctypes

    from pipeline.allocator import ENV, TRIM_THRESHOLD, worker_env

    if glibc_defaults:
        os.environ[ENV] = "0"  # fit() then starts its workers without them
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
    libc = ctypes.CDLL(None)
    return bool(worker_env()) and libc.mallopt(m_mmap_max, 0) == 1 and libc.mallopt(m_trim_threshold, TRIM_THRESHOLD) == 1


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before DeepSpeed is imported: no CUDA probe on CPU
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model reference (default: the embedded model)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per configuration")
    parser.add_argument("--batch-size", type=int, default=8, help="global batch size in examples")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--lora-r", type=int, default=0, help="train LoRA adapters of this rank (train.lora.r) on both paths; 0: every weight")
    parser.add_argument("--repeats", type=int, default=1, help="runs per configuration (interleaved); the best is reported")
    parser.add_argument("--skip", nargs="*", default=[], choices=["zero2", "zero3", "workers2"], help="configurations to leave out")
    parser.add_argument("--glibc-malloc-defaults", action="store_true",
                        help="every path with glibc's malloc defaults instead of pipeline.allocator's settings")
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error(f"--steps {args.steps}: at least 2 (the first step is timed apart from the rest)")
    malloc = same_allocator_everywhere(args.glibc_malloc_defaults)

    import ray

    from pipeline.models import resolve
    from pipeline.train.config import TrainConfig

    cpus = os.cpu_count() or 1
    model_path = str(resolve(args.model))
    base = dict(batch_size=args.batch_size, bf16=args.precision == "bf16", lr=1e-4, max_steps=args.steps,
                lora={"r": args.lora_r} if args.lora_r else None)
    runs = [("bare torch loop (1 process)", None, 1), ("DeepSpeed ZeRO-0 engine, no Ray (1 process)", "engine", 1),
            ("Ray Train + DeepSpeed ZeRO-0, 1 worker", 0, 1)]
    if "zero2" not in args.skip:
        runs.append(("Ray Train + DeepSpeed ZeRO-2, 1 worker", 2, 1))
    if "zero3" not in args.skip and not args.lora_r:  # LoRA under ZeRO-3 is refused (train.lora)
        runs.append(("Ray Train + DeepSpeed ZeRO-3, 1 worker", 3, 1))
    if "workers2" not in args.skip:
        runs.append(("Ray Train + DeepSpeed ZeRO-2, 2 workers", 2, 2))

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"DS_ACCELERATOR": os.environ["DS_ACCELERATOR"]}})
    best: dict[str, tuple[dict, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as storage:
        for repeat in range(args.repeats):  # interleaved, so a busy spell hits every configuration
            for label, stage, workers in runs:
                train = TrainConfig(**base, zero_stage=stage if isinstance(stage, int) else 0, num_workers=workers)
                rows, padding = rows_for(args.model, args.steps, args.batch_size, workers)
                if stage is None:  # the bare loop
                    r = bare_loop(model_path, train, rows, cpus)
                elif stage == "engine":
                    r = engine_loop(model_path, train, rows, cpus)
                else:
                    r = ray_fit(model_path, train, rows, cpus, storage, f"bench-z{stage}-w{workers}-{repeat}")
                print(f"{label} (run {repeat + 1}): {r['steady_tokens_per_s']:.1f} tok/s after the first step, "
                      f"{r['tokens_per_s']:.1f} over every step", flush=True)
                if label not in best or r["steady_tokens_per_s"] > best[label][0]["steady_tokens_per_s"]:
                    best[label] = (r, padding)
    ray.shutdown()
    results = [(label, *best[label]) for label, _, _ in runs]

    import torch

    from pipeline.report.cost import training_flops
    from pipeline.report.inputs import parameter_count
    from pipeline.roofline import fraction, roof

    baseline = results[0][1]["steady_tokens_per_s"]
    params, ceiling = parameter_count(Path(model_path)), roof(args.precision, cpus)
    print(f"\nmodel {args.model}{f' (LoRA r = {args.lora_r})' if args.lora_r else ''}, {args.precision}, {args.steps} steps x {args.batch_size} examples, {cpus} CPUs, "
          f"best of {args.repeats}; malloc {'keeps freed memory' if malloc else 'glibc defaults'}; "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; "
          f"{args.precision} matmul roof {ceiling.flops_per_s / 1e9:.0f} GFLOP/s ({cpus} threads)")
    print(f"| configuration | tokens/s after the first step | vs bare loop | tokens/s, every step | first step s | "
          f"setup s | data wait s | wall s | padding | final loss | "
          f"GFLOP/s after the first step ({'4' if args.lora_r else '6'} x params x tokens) | of roof |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, r, padding in results:
        steady = r["steady_tokens_per_s"]
        achieved, share = fraction(training_flops(params, steady, bool(args.lora_r)), 1.0, ceiling)  # over 1 s of training
        print(f"| {label} | {steady:.1f} | {steady / baseline:.2f}x | {r['tokens_per_s']:.1f} | {r['first_step_s']:.2f} | "
              f"{r['setup_s']:.1f} | {r['data_wait_s']:.2f} | {r['wall_s']:.1f} | {padding:.1%} | {r['final_loss']:.3f} | "
              f"{achieved / 1e9:.1f} | {share:.0%} |")


if __name__ == "__main__":
    main()
