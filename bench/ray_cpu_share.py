"""Where the machine's CPU goes while a Ray Train fit steps: CPU time per process over the middle
of the fit.

One Ray Train + DeepSpeed ZeRO-0 fit (one worker, the pipeline's path, as in
`bench.train_throughput`) runs while a thread here reads every process's CPU time once a second.
The window is the middle half of the time the Ray Train worker process was seen, so the worker's
start, model load and export fall outside it when the fit is long enough (64 steps of the
embedded model take about two minutes on 2 cores). Each process is labelled by its Ray title
(`ray::TrainController.run`) or its program and script; processes of one label are added up.
The table gives each label's share of one core and of the machine, and what was idle.

    DS_ACCELERATOR=cpu python -m bench.ray_cpu_share --steps 64 --precision fp32
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

#: The Ray Train worker's process title.
WORKER = "ray::RayTrainWorker"


@dataclass(frozen=True)
class Snapshot:
    at: float  # time.monotonic()
    cpu: dict[int, tuple[str, float]]  # pid -> (label, user + system CPU seconds so far)


def label(cmdline: list[str], name: str) -> str:
    """A readable label: a Ray worker's title ("ray::Class.method"), else the program's name and
    its script, if the program is an interpreter."""
    if cmdline and cmdline[0].startswith("ray::"):
        return cmdline[0].split()[0]
    if not cmdline:
        return name
    program = Path(cmdline[0]).name
    args = cmdline[1:]
    module = args[args.index("-m") + 1] if "-m" in args[:-1] else None
    script = module or next((Path(a).name for a in args if a.endswith(".py")), None)
    return f"{program} {script}" if script else program


def snapshot() -> Snapshot:
    """Every process's CPU time now; processes that end while being read are left out."""
    import psutil

    cpu = {}
    for p in psutil.process_iter(["cmdline", "name", "cpu_times"]):
        times = p.info["cpu_times"]
        if times is None:  # access denied or gone
            continue
        cpu[p.pid] = (label(p.info["cmdline"] or [], p.info["name"] or "?"), times.user + times.system)
    return Snapshot(time.monotonic(), cpu)


def shares(before: Snapshot, after: Snapshot) -> list[tuple[str, int, float]]:
    """(label, processes, percent of one core) per label over the window between two snapshots,
    largest first. A process counts only if it is in both (its CPU time before the window is
    not known otherwise)."""
    seconds = after.at - before.at
    if seconds <= 0:
        raise ValueError(f"the window must have a length: {seconds} s")
    used: dict[str, list[float]] = {}
    for pid, (name, cpu) in after.cpu.items():
        if pid in before.cpu and before.cpu[pid][0] == name:
            used.setdefault(name, []).append(cpu - before.cpu[pid][1])
    rows = [(name, len(v), 100 * sum(v) / seconds) for name, v in used.items()]
    return sorted(rows, key=lambda r: -r[2])


def window(snapshots: list[Snapshot], worker: str = WORKER) -> tuple[Snapshot, Snapshot]:
    """The snapshots nearest the start and end of the middle half of the span in which a process
    labelled `worker` was seen."""
    seen = [s for s in snapshots if any(name == worker for name, _ in s.cpu.values())]
    if len(seen) < 4:
        raise ValueError(f"{worker} was seen in {len(seen)} snapshots; the fit is too short to take a window of (more --steps)")
    first, last = seen[0].at, seen[-1].at
    lo, hi = first + (last - first) / 4, first + 3 * (last - first) / 4
    inside = [s for s in seen if lo <= s.at <= hi]
    if len(inside) < 2:
        raise ValueError(f"only {len(inside)} snapshots in the middle of the fit; more --steps")
    return inside[0], inside[-1]


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DS_ACCELERATOR", "cpu")  # before DeepSpeed is imported: no CUDA probe on CPU
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model reference (default: the embedded model)")
    parser.add_argument("--steps", type=int, default=64, help="optimizer steps of the fit")
    parser.add_argument("--batch-size", type=int, default=8, help="batch size in examples")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="fp32")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between snapshots")
    args = parser.parse_args(argv)

    import ray
    import torch

    from bench.train_throughput import ray_fit, rows_for
    from pipeline.models import resolve
    from pipeline.train.config import TrainConfig

    cpus = os.cpu_count() or 1
    model_path = str(resolve(args.model))
    train = TrainConfig(batch_size=args.batch_size, bf16=args.precision == "bf16", lr=1e-4, max_steps=args.steps, zero_stage=0)
    rows, _ = rows_for(args.model, args.steps, args.batch_size, 1)
    snapshots: list[Snapshot] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            snapshots.append(snapshot())
            done.wait(args.interval)

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"DS_ACCELERATOR": os.environ["DS_ACCELERATOR"]}})
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-cpu-") as storage:
            result = ray_fit(model_path, train, rows, cpus, storage, "bench-cpu-share")
    finally:
        done.set()
        sampler.join()
        ray.shutdown()
    before, after = window(snapshots)
    rows_out = shares(before, after)
    seconds = after.at - before.at
    total = sum(r[2] for r in rows_out)
    print(f"\nmodel {args.model}, {args.precision}, {args.steps} steps x {args.batch_size} examples, {cpus} CPUs; "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}; window {seconds:.0f} s in the middle of the fit; "
          f"the fit: {result['steady_tokens_per_s']:.1f} tokens/s after the first step")
    print("| process | count | % of one core | % of the machine |")
    print("|---|---|---|---|")
    for name, count, pct in rows_out:
        if pct >= 0.05:
            print(f"| {name} | {count} | {pct:.1f} | {pct / cpus:.1f} |")
    others = sum(pct for name, _, pct in rows_out if name != WORKER)
    print(f"| everything but {WORKER} | | {others:.1f} | {others / cpus:.1f} |")
    print(f"| idle | | {max(0.0, 100 * cpus - total):.1f} | {max(0.0, 100 * cpus - total) / cpus:.1f} |")


if __name__ == "__main__":
    main()
