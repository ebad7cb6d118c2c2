"""Load benchmark of the Serve app on loopback: throughput, p50/p99 latency, errors; batching on vs off;
time to first token and inter-token latency of streamed requests.

Fires a bounded number of OpenAI-style completion requests at a fixed concurrency against the
generation deployment with batching (serve.max_batch_size = --batch) and without it
(max_batch_size = 1). Both variants are deployed side by side as two Serve applications on one
Ray cluster (/on and /off) and the requests are sent in alternating rounds, so a change in the
machine's load during the run hits both alike. Every --stream-every-th request is streamed
(`stream: true`): its time to first token (TTFT: request sent to first text chunk) and its
inter-token latencies (gaps between later chunks) are reported beside the other figures. Prints a
Markdown table and the CPU's capability (`torch.backends.cpu.get_cpu_capability()`). The served
run is a scratch folder whose base model is the embedded SmolLM2-135M (--model to change it).

    DS_ACCELERATOR=cpu python -m bench.serve_load --requests 200 --concurrency 8 --max-tokens 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time

PROMPTS = [
    "The capital of France is", "Once upon a time, a small robot", "Three facts about the ocean:",
    "A good way to learn a new language is", "Write a short note to a friend about", "The recipe needs",
    "In the morning, the village", "The most important rule of science is",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scratch_run_config(root: str, model: str, batch: int, threads: int):
    from pipeline.config import RunConfig
    from pipeline.records import Doc, Item, write_records
    from pipeline.runs import Run

    cfg = RunConfig.model_validate({
        "name": "serve-bench", "output_dir": root, "model": {"ref": model},
        "serve": {"port": free_port(), "max_batch_size": batch, "batch_wait_timeout_s": 0.05,
                  "generation": {"num_cpus": 1, "torch_threads": threads, "max_ongoing_requests": 32},
                  "evaluator": {"num_cpus": 0.5}, "ingress": {"num_cpus": 0.25}},
    })
    run = Run.of(cfg)
    run.save_config(cfg)  # a fresh scratch folder: nothing to reconfigure
    write_records(run.path("data", "docs.parquet"), Doc,
                  [{"doc_id": "d0", "world": "w", "text": "Femp are more dangerous than glon.", "origin": "train"}])
    write_records(run.path("data", "items.parquet"), Item, [{
        "item_id": "i0", "world": "w", "split": "reversal", "subtask": "c", "prompt": "Glon are",
        "choices": ["less dangerous than femp.", "more dangerous than femp."], "answer_index": 0}])
    return cfg


async def streamed(client, url: str, body: dict) -> tuple[bool, int, float | None, list[float]]:
    """One streamed request: (ok, completion tokens, time to first token s, inter-token gaps s)."""
    t0 = time.perf_counter()
    arrivals, tokens = [], 0
    async with client.stream("POST", url, json={**body, "stream": True, "stream_options": {"include_usage": True}}) as resp:
        if resp.status_code != 200:
            return False, 0, None, []
        async for line in resp.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if "error" in event:
                return False, 0, None, []
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            if event["choices"] and event["choices"][0]["text"]:
                arrivals.append(time.perf_counter())
    if not arrivals:
        return True, tokens, None, []
    return True, tokens, arrivals[0] - t0, [b - a for a, b in zip(arrivals, arrivals[1:])]


async def fire(url: str, model: str, n: int, concurrency: int, max_tokens: int, stream_every: int) -> tuple:
    """n requests, `concurrency` in flight, every `stream_every`-th streamed; returns (latencies s,
    errors, completion tokens, wall s, TTFTs s, inter-token gaps s)."""
    import httpx

    latencies: list[float] = []
    ttfts: list[float] = []
    gaps: list[float] = []
    errors = tokens = 0
    queue = list(range(n))

    async def worker(client):
        nonlocal errors, tokens
        while queue:
            k = queue.pop()
            body = {"model": model, "prompt": PROMPTS[k % len(PROMPTS)], "max_tokens": max_tokens, "temperature": 0}
            t0 = time.perf_counter()
            used, ttft, gap = 0, None, []
            try:
                if stream_every and k % stream_every == 0:
                    ok, used, ttft, gap = await streamed(client, url, body)
                else:
                    resp = await client.post(url, json=body)
                    ok = resp.status_code == 200
                    used = resp.json()["usage"]["completion_tokens"] if ok else 0
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0)
            if ok:
                tokens += used
                if ttft is not None:
                    ttfts.append(ttft)
                gaps.extend(gap)
            else:
                errors += 1

    async with httpx.AsyncClient(timeout=600) as client:
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return latencies, errors, tokens, time.perf_counter() - start, ttfts, gaps


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def deploy(cfg, name: str, prefix: str) -> str:
    """Deploy cfg's app under `prefix`, warm it up (model loaded), return its base URL."""
    import httpx
    from ray import serve

    from serve.app import build_app

    serve.run(build_app(cfg), name=name, route_prefix=prefix)
    base = f"http://127.0.0.1:{cfg.serve.port}{prefix}"
    for prompt in PROMPTS[:2]:
        resp = httpx.post(f"{base}/v1/completions", json={"model": "base", "prompt": prompt, "max_tokens": 2}, timeout=600)
        resp.raise_for_status()
    return base


def summarize(label: str, batch: int, base: str, lat: list[float], errors: int, tokens: int, wall: float,
              ttfts: list[float], gaps: list[float]) -> dict:
    import httpx

    stats = httpx.get(f"{base}/v1/stats", timeout=60).json()["generator"]["batch_sizes"]
    warmup = {"1": 2}  # the two warm-up requests ran alone
    counts = {k: v - warmup.get(k, 0) for k, v in stats.items()}
    mean_batch = sum(int(k) * v for k, v in counts.items()) / max(1, sum(counts.values()))
    n = len(lat)
    return {"mode": label, "max_batch_size": batch, "requests": n, "wall_s": wall, "req_s": n / wall,
            "tok_s": tokens / wall, "p50_s": statistics.median(lat), "p99_s": percentile(lat, 99), "errors": errors,
            "mean_batch": mean_batch, "streams": len(ttfts),
            "ttft_p50_s": statistics.median(ttfts) if ttfts else float("nan"),
            "ttft_p99_s": percentile(ttfts, 99) if ttfts else float("nan"),
            "itl_p50_ms": 1000 * statistics.median(gaps) if gaps else float("nan"),
            "itl_p99_ms": 1000 * percentile(gaps, 99) if gaps else float("nan")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8, help="max_batch_size of the batched run")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="base model of the scratch run")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the generation replica")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds the requests are split into")
    parser.add_argument("--stream-every", type=int, default=2,
                        help="stream every n-th request (0: none) for time to first token and inter-token latency")
    parser.add_argument("--ray-cpus", type=int, default=4,
                        help="logical CPUs of the local Ray cluster (two apps are deployed at once)")
    args = parser.parse_args(argv)

    import ray
    from ray import serve

    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"DS_ACCELERATOR": "cpu"}})
    with tempfile.TemporaryDirectory(prefix="serve-bench-") as root:
        on = scratch_run_config(root, args.model, args.batch, args.threads)
        off = on.model_copy(update={"serve": on.serve.model_copy(update={"max_batch_size": 1})})
        serve.start(http_options={"host": "127.0.0.1", "port": on.serve.port})
        modes = {"batching off": (off, deploy(off, "bench-off", "/off")), "batching on": (on, deploy(on, "bench-on", "/on"))}
        runs = {label: ([], 0, 0, 0.0, [], []) for label in modes}
        per_round = max(args.concurrency, args.requests // args.rounds)
        for r in range(args.rounds):
            for label in (list(modes) if r % 2 == 0 else list(modes)[::-1]):
                got = asyncio.run(fire(f"{modes[label][1]}/v1/completions", "base", per_round,
                                       args.concurrency, args.max_tokens, args.stream_every))
                runs[label] = tuple(a + b for a, b in zip(runs[label], got))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
        rows = [summarize(label, cfg.serve.max_batch_size, base, *runs[label])
                for label, (cfg, base) in modes.items()]
    serve.shutdown()
    ray.shutdown()
    import torch

    print(f"\n{rows[0]['requests']} requests per mode in {args.rounds} alternating rounds, concurrency "
          f"{args.concurrency}, max_tokens {args.max_tokens}, model {args.model}, {args.threads} torch threads, "
          f"every {args.stream_every or 'no'}-th request streamed, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}\n")
    print("| mode | max_batch_size | mean batch | req/s | tokens/s | p50 s | p99 s | streams | TTFT p50 s | "
          "TTFT p99 s | ITL p50 ms | ITL p99 ms | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['max_batch_size']} | {r['mean_batch']:.1f} | {r['req_s']:.2f} | {r['tok_s']:.1f} | "
              f"{r['p50_s']:.2f} | {r['p99_s']:.2f} | {r['streams']} | {r['ttft_p50_s']:.2f} | {r['ttft_p99_s']:.2f} | "
              f"{r['itl_p50_ms']:.0f} | {r['itl_p99_ms']:.0f} | {r['errors']} |")
    print(f"\nthroughput ratio on/off: {rows[1]['req_s'] / rows[0]['req_s']:.2f}x")
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
