"""This machine's matmul roof: the sustained FLOP/s of a large matrix product per dtype and thread count.

Measured once per machine and cached in `roofline.json` in the cache root (`$KNOWLEDGE_LAB_CACHE`,
else ~/.cache/knowledge-lab), keyed by CPU model, torch's CPU capability, torch version, thread count and dtype, so another CPU,
torch build or thread count is measured afresh. `cached` only reads the cache (the report uses it
and never runs a matmul); `measure_and_cache` fills it; `python -m pipeline.roofline` measures the
dtypes and thread count the stages use and prints the table.

The roof is the best of several timed windows of square products (the fastest window is the one
least disturbed by other work on a shared machine): what torch's matmul sustains, not a vendor
peak. A stage's fraction of roof is its cost-model FLOPs (`pipeline.report.cost`) over its
measured time, divided by this. `bf16_pays` compares the two dtypes' roofs: `train.bf16: auto`
trains in bf16 on a CPU where that says bf16 is the faster path.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)
DTYPES = ("fp32", "bf16")
CACHE_FILE = "roofline.json"
MEASURE_COMMAND = "python -m pipeline.roofline"


@dataclass(frozen=True)
class Roof:
    dtype: str
    threads: int
    flops_per_s: float
    size: int
    key: str


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(dtype: str, threads: int) -> str:
    import torch

    return f"{cpu_model()} | {torch.backends.cpu.get_cpu_capability()} | torch {torch.__version__} | {threads} threads | {dtype}"


def cache_path() -> Path:
    from pipeline.models import cache_dir

    return cache_dir().parent / CACHE_FILE  # beside the models folder


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def cached(dtype: str, threads: int, path: Path | None = None) -> Roof | None:
    """The cached roof of this machine for `dtype` at `threads` torch threads, or None (never measures)."""
    key = machine_key(dtype, threads)
    entry = _read(path or cache_path()).get(key)
    return Roof(**entry) if entry else None


def cached_flops_per_s(dtype: str, threads: int | None = None) -> float | None:
    """The cached roof's FLOP/s (threads: default all CPUs, as the stages use on one machine), or None."""
    found = cached(dtype, threads or os.cpu_count() or 1)
    return found.flops_per_s if found else None


def matmul_flops_per_s(dtype: str, threads: int, size: int = 2048, seconds: float = 1.0, windows: int = 5) -> float:
    """Best FLOP/s of `windows` timed windows of size x size products (2 size^3 FLOPs each)."""
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(size, size).to(torch_dtype)
        b = torch.randn(size, size).to(torch_dtype)
        out = torch.empty(size, size, dtype=torch_dtype)
        torch.mm(a, b, out=out)  # warm-up: packing, kernel selection
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        per_call = max(time.perf_counter() - start, 1e-6)
        if per_call >= seconds:  # one product outlasts the budget (an emulated dtype): that one call is the rate
            return 2.0 * size ** 3 / per_call
        calls = max(1, int(seconds / windows / per_call))
        best = 0.0
        for _ in range(windows):
            start = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b, out=out)
            best = max(best, 2.0 * size ** 3 * calls / (time.perf_counter() - start))
        return best
    finally:
        torch.set_num_threads(previous)


def measure_and_cache(dtype: str, threads: int, size: int = 2048, seconds: float = 1.0, path: Path | None = None) -> Roof:
    """Measure the roof and cache it; a higher cached value of the same key stays (other work on
    the machine can only slow a measurement down, so the highest is the closest to the roof)."""
    from pipeline.records import write_json

    path = path or cache_path()
    key = machine_key(dtype, threads)
    roof = Roof(dtype, threads, matmul_flops_per_s(dtype, threads, size, seconds), size, key)
    entries = _read(path)
    if entries.get(key, {}).get("flops_per_s", 0) > roof.flops_per_s:
        return Roof(**entries[key])
    entries[key] = asdict(roof)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, entries)
    log.info("matmul roof %s, %d threads: %.1f GFLOP/s (cached in %s)", dtype, threads, roof.flops_per_s / 1e9, path)
    return roof


def roof(dtype: str, threads: int) -> Roof:
    """The cached roof, measured first if this machine has none yet (benchmarks and `bf16_pays`;
    the report never measures)."""
    return cached(dtype, threads) or measure_and_cache(dtype, threads)


#: On a CPU, bf16 trains faster than fp32 where its matmul roof is at least this many times fp32's.
#: Measured (2 threads, docs/benchmarks.md): roof 0.43x fp32's (Intel, AVX512-BF16 without AMX)
#: made a 1.5B LoRA step 0.64x as fast; 2.2x (AMD, AVX512-BF16) made a 1.5B LoRA fit 2.6x as fast
#: (the 135M's 0.9-1.3x, within noise); AMX: 6.6x.
BF16_MIN_ROOF_RATIO = 1.5


def bf16_pays(threads: int) -> bool:
    """Whether bf16 matrix products on this CPU run at BF16_MIN_ROOF_RATIO x fp32's or more, by the
    cached roofs (measured once per machine, about 2 s, if not cached yet). A CPU without
    AVX512-BF16 or AMX, or torch running its AVX2 kernels, emulates bf16 (about 0.001x fp32):
    False without measuring."""
    import torch

    native = [getattr(torch.cpu, f, lambda: False)() for f in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if not any(native) or not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False  # also where torch's kernels are held to AVX2 (ATEN_CPU_CAPABILITY=avx2)
    ratio = roof("bf16", threads).flops_per_s / roof("fp32", threads).flops_per_s
    log.info("bf16 matmul roof %.2fx fp32's on this CPU (%d threads): %s", ratio, threads,
             "bf16" if ratio >= BF16_MIN_ROOF_RATIO else "fp32")
    return ratio >= BF16_MIN_ROOF_RATIO


def fraction(flops: float, seconds: float, found: Roof | None) -> tuple[float, float | None]:
    """(achieved FLOP/s, share of the roof or None without one)."""
    achieved = flops / seconds if seconds > 0 else 0.0
    return achieved, (achieved / found.flops_per_s if found is not None and found.flops_per_s > 0 else None)


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[os.cpu_count() or 1],
                        help="torch thread counts to measure (default: all CPUs, as one training worker or scorer uses)")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES))
    parser.add_argument("--size", type=int, default=2048, help="square matrix size")
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per dtype and thread count")
    args = parser.parse_args(argv)
    print(f"CPU {cpu_model()}, capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")
    print("| dtype | threads | GFLOP/s |\n|---|---|---|")
    for threads in args.threads:
        for dtype in args.dtypes:
            r = measure_and_cache(dtype, threads, args.size, args.seconds)
            print(f"| {dtype} | {threads} | {r.flops_per_s / 1e9:.1f} |")
    print(f"\ncached in {cache_path()}")


if __name__ == "__main__":
    main()
