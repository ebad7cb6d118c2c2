"""This machine's matmul roof: the sustained FLOP/s of a large matrix product per dtype and thread count.

Measured once per machine and cached in `roofline.json` in the cache root (`$KNOWLEDGE_LAB_CACHE`,
else ~/.cache/knowledge-lab), keyed by CPU model, torch's CPU capability, torch version, thread count and dtype, so another CPU,
torch build or thread count is measured afresh. `cached` only reads the cache (the report uses it
and never runs a matmul); `measure_and_cache` fills it; `python -m pipeline.roofline` measures the
dtypes and thread count the stages use and prints the table.

The roof is the best of several timed windows of square products: what torch's matmul sustains,
not a vendor peak. Each window also records the CPUs the process had during it (its CPU time over
the wall time): with another process on the cores a 2-thread product gets, say, 1.2 of 2 CPUs
and runs at about half speed, so only a window with nearly all of them (`QUIET_SHARE`) counts as a
roof. A measurement without one is used by the process that took it but not cached (a warning
says so), and the cache keeps the highest quiet measurement; entries written before the CPU share
was recorded are measured again once. A stage's fraction of roof is its cost-model FLOPs
(`pipeline.report.cost`) over its measured time, divided by this. `bf16_pays` compares the two
dtypes' roofs: `train.bf16: auto` trains in bf16 on a CPU where that says bf16 is the faster path.
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


#: A window is quiet when the process had at least this share of the CPUs its threads can use.
QUIET_SHARE = 0.9


@dataclass(frozen=True)
class Roof:
    dtype: str
    threads: int
    flops_per_s: float
    size: int
    key: str
    #: CPUs the process had in the measuring window (None: an entry from before this was recorded)
    cpus: float | None = None


@dataclass(frozen=True)
class Measurement:
    flops_per_s: float  # the best quiet window's, else the best window's
    cpus: float  # CPUs the process had in that window
    quiet: bool


def usable_cpus(threads: int) -> int:
    """CPUs `threads` threads of this process can run on at once."""
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    return max(1, min(threads, available))


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


def matmul_flops_per_s(dtype: str, threads: int, size: int = 2048, seconds: float = 1.0, windows: int = 5) -> Measurement:
    """Best FLOP/s of timed windows of size x size products (2 size^3 FLOPs each): `windows` windows
    of seconds / windows each, and up to three times as many more while none was quiet (a machine
    busy for a moment, as when a Ray worker measures while its cluster starts)."""
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    needed = QUIET_SHARE * usable_cpus(threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.randn(size, size).to(torch_dtype)
        b = torch.randn(size, size).to(torch_dtype)
        out = torch.empty(size, size, dtype=torch_dtype)
        torch.mm(a, b, out=out)  # warm-up: packing, kernel selection
        per_call, cpus = _timed(lambda: torch.mm(a, b, out=out), 1)
        if per_call >= seconds:  # one product outlasts the budget (an emulated dtype): that one call is the rate
            return Measurement(2.0 * size ** 3 / per_call, cpus, cpus >= needed)
        calls = max(1, int(seconds / windows / per_call))
        measured: list[tuple[float, float]] = []  # (FLOP/s, CPUs) per window
        for i in range(4 * windows):
            wall, cpus = _timed(lambda: torch.mm(a, b, out=out), calls)
            measured.append((2.0 * size ** 3 * calls / wall, cpus))
            if i + 1 >= windows and any(c >= needed for _, c in measured):
                break
        quiet = [m for m in measured if m[1] >= needed]
        flops, cpus = max(quiet or measured)
        return Measurement(flops, cpus, bool(quiet))
    finally:
        torch.set_num_threads(previous)


def _timed(call, n: int) -> tuple[float, float]:
    """(wall seconds, CPUs this process had) over `n` calls."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        call()
    wall, cpu = max(time.perf_counter() - wall, 1e-9), time.process_time() - cpu
    return wall, cpu / wall


def measure_and_cache(dtype: str, threads: int, size: int = 2048, seconds: float = 1.0, path: Path | None = None) -> Roof:
    """Measure the roof and cache it if a window was quiet. A higher quiet cached value of the same
    key stays (other work on the machine can only slow a measurement down); an entry without a
    recorded CPU share is replaced by a quiet measurement."""
    from pipeline.records import write_json

    path = path or cache_path()
    key = machine_key(dtype, threads)
    m = matmul_flops_per_s(dtype, threads, size, seconds)
    roof = Roof(dtype, threads, m.flops_per_s, size, key, round(m.cpus, 2))
    if not m.quiet:
        log.warning("matmul roof %s, %d threads: %.1f GFLOP/s measured while other work held the cores (this "
                    "process had %.1f of %d CPUs): used now, not cached; `%s` on a quiet machine caches it",
                    dtype, threads, roof.flops_per_s / 1e9, m.cpus, usable_cpus(threads), MEASURE_COMMAND)
        return roof
    entries = _read(path)
    old = entries.get(key, {})
    if old.get("cpus") is not None and old.get("flops_per_s", 0) > roof.flops_per_s:
        return Roof(**old)
    entries[key] = asdict(roof)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, entries)
    log.info("matmul roof %s, %d threads: %.1f GFLOP/s (cached in %s)", dtype, threads, roof.flops_per_s / 1e9, path)
    return roof


def roof(dtype: str, threads: int) -> Roof:
    """The cached roof, measured first if this machine has none yet, or only one from before the
    CPU share was recorded (benchmarks, the estimate and `bf16_pays`; the report never measures)."""
    found = cached(dtype, threads)
    return found if found is not None and found.cpus is not None else measure_and_cache(dtype, threads)


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
    print("| dtype | threads | GFLOP/s | CPUs the process had |\n|---|---|---|---|")
    for threads in args.threads:
        for dtype in args.dtypes:
            r = measure_and_cache(dtype, threads, args.size, args.seconds)
            print(f"| {dtype} | {threads} | {r.flops_per_s / 1e9:.1f} | {r.cpus if r.cpus is not None else '-'} |")
    print(f"\ncache: {cache_path()} (quiet measurements only)")


if __name__ == "__main__":
    main()
