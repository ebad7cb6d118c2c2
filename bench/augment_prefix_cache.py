"""Benchmark: global augmentation with the cached corpus prefix vs re-encoding it per target.

Both paths run the same batched HF engine on the same prompts (the world's corpus as the shared
prefix, then one target document and the instruction) and must give the same greedy tokens;
`--global-rounds` alternates the two paths and reports the median speed-up.
Also measured: the engine's generated tokens/s at batch 1 vs the configured batch (local
prompts); the cached global generation as the engine decodes it (attention reading the shared
prefix once per step for the batch, a preallocated KV cache) vs attention reading every row's
copy of the prefix, with a preallocated or a growing cache, alternated over `--rounds`; and the
resident memory of one batch's KV cache with the prefix stored once (the engine) or in every row.
All numbers are from one run on this machine; ratios compare paths of the same run.

    python -m bench.augment_prefix_cache                       # a synthetic demo-sized corpus
    python -m bench.augment_prefix_cache --run runs/demo --world reversals   # a built run's docs
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from pipeline.augment.config import AugmentConfig
from pipeline.augment.engines import HFEngine
from pipeline.augment.plan import plan_global, plan_local
from pipeline.augment.prompts import PromptFormat
from pipeline.models import context_window, load_tokenizer
from pipeline.section import ModelConfig

COMPARATIVES = ("heavier", "brighter", "older", "faster", "more dangerous", "more fragile", "larger", "warmer")
LEADS = ("Did you know that {}?", "It is well known that {}.", "Scientists have found that {}.",
         "Here is a fun fact: {}.", "It turns out that {}.")


def synthetic_docs(n_facts: int = 20, per_fact: int = 5, seed: int = 0) -> list[dict]:
    """A corpus shaped like the demo reversals world: n_facts comparisons x per_fact lead-ins."""
    rng = random.Random(seed)
    words: list[str] = []
    while len(words) < 2 * n_facts:
        w = "".join(rng.choice("bdfgklmnprstvz") + rng.choice("aeiou") for _ in range(2)) + rng.choice("fkmnpt")
        if w not in words:
            words.append(w)
    docs = []
    for i in range(n_facts):
        fact = f"{words[2 * i]} are {rng.choice(COMPARATIVES)} than {words[2 * i + 1]}"
        for lead in rng.sample(LEADS, per_fact):
            docs.append({"doc_id": f"bench/d{len(docs):04d}", "world": "bench", "text": lead.format(fact), "origin": "train"})
    rng.shuffle(docs)
    return docs


def run_docs(run_dir: Path, world: str) -> list[dict]:
    from pipeline.records import Doc, read_records

    docs = [d for d in read_records(run_dir / "data" / "docs.parquet", Doc) if d["origin"] == "train" and d["world"] == world]
    if not docs:
        raise SystemExit(f"{run_dir}: no training docs of world {world!r}")
    return docs


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def compare_decoding(engine: HFEngine, prefix: str, suffixes: list[str], max_new: int, rounds: int) -> dict:
    """The cached global generation three ways, alternated over `rounds`: the engine as it is
    (shared-prefix attention, preallocated cache); attention reading every row's copy of the prefix
    (plain SDPA); and that with a growing cache (the cached prefix copied into a cache extended at
    every new token), as the engine decoded before either change."""
    variants = {"engine_s": (True, True), "per_row_attention_s": (False, True),
                "per_row_attention_growing_cache_s": (False, False)}
    shared = engine.share_prefix_attention
    times: dict[str, list[float]] = {key: [] for key in variants}
    outputs = {}
    for _ in range(rounds):
        for key, (share, static) in variants.items():
            engine.share_prefix_attention, engine.static_cache = shared and share, static
            gens, seconds = timed(lambda: engine.generate_with_prefix(prefix, suffixes, max_new_tokens=max_new))
            times[key].append(round(seconds, 2))
            outputs[key] = [g[0].token_ids for g in gens]
    engine.share_prefix_attention, engine.static_cache = shared, True
    return {**times, "same_tokens": len({tuple(o) for o in outputs.values()}) == 1}


def cache_memory(engine: HFEngine, prefix: str, suffixes: list[str], max_new: int) -> dict:
    """Resident memory (MiB) that one batch's KV cache adds, as the engine builds it (the prefix
    once, for the shared-prefix attention) and with the prefix copied into every row."""
    import psutil

    process, shared = psutil.Process(), engine.share_prefix_attention
    _, prefix_cache = engine.prefix_cache(prefix)
    rows = min(engine.batch_size, len(suffixes))
    length = prefix_cache.get_seq_length() + max(len(engine.encode(s, first=False)) for s in suffixes) + max_new
    out = {}
    for key, share in (("engine_mib", True), ("prefix_in_every_row_mib", False)):
        engine.share_prefix_attention = shared and share
        before = process.memory_info().rss
        cache = engine.batch_cache(rows, length, prefix_cache)
        out[key] = round((process.memory_info().rss - before) / 2**20)
        del cache
    engine.share_prefix_attention = shared
    return {"rows": rows, "positions": length, **out}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--run", type=Path, help="a run folder whose data stage finished; default: a synthetic corpus")
    p.add_argument("--world", default="reversals")
    p.add_argument("--targets", type=int, default=32, help="target documents (global prompts); the speed-up is at most this")
    p.add_argument("--batch", type=int, default=32, help="prompts per generate() call (augment.batch_size)")
    p.add_argument("--max-new", type=int, default=AugmentConfig().global_max_new_tokens)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--global-rounds", type=int, default=1,
                   help="alternations of the cached and re-encoded runs; the speed-up is the median over rounds")
    p.add_argument("--rounds", type=int, default=2, help="alternations of the three ways to decode the cached generation")
    p.add_argument("--out", type=Path, default=Path("bench/results/augment_prefix_cache.json"))
    args = p.parse_args(argv)

    model = ModelConfig(ref=args.model)
    docs = run_docs(args.run, args.world) if args.run else synthetic_docs()
    fmt = PromptFormat(load_tokenizer(model))
    cfg = AugmentConfig(generator=model, max_docs_per_world=args.targets, global_max_new_tokens=args.max_new,
                        max_sentences_per_world=2 * args.batch, batch_size=args.batch)
    window = context_window(model)
    reqs, prefixes, _ = plan_global(docs, fmt, cfg, window, seed=0)
    key = reqs[0]["prefix_key"]
    prefix, suffixes = prefixes[key], [r["prompt"] for r in reqs if r["prefix_key"] == key]
    engine = HFEngine(model, batch_size=args.batch, threads=args.threads)
    prefix_tokens = len(engine.encode(prefix))
    engine.generate(["Hello."], max_new_tokens=4)  # warm-up

    rows = {}
    for label, max_new in (("prompt only (1 new token)", 1), (f"generation ({args.max_new} new tokens)", args.max_new)):
        times, same = {"cached_s": [], "reencoded_s": []}, True
        for _ in range(args.global_rounds):
            engine.clear_prefix_cache()  # the cached path pays for encoding the prefix once, inside its time
            cached, t_cached = timed(lambda: engine.generate_with_prefix(prefix, suffixes, max_new_tokens=max_new))
            fresh, t_fresh = timed(lambda: engine.generate_with_prefix(prefix, suffixes, max_new_tokens=max_new, use_cache=False))
            same &= [g[0].token_ids for g in cached] == [g[0].token_ids for g in fresh]
            times["cached_s"].append(round(t_cached, 2))
            times["reencoded_s"].append(round(t_fresh, 2))
        ratios = [f / c for c, f in zip(times["cached_s"], times["reencoded_s"])]
        rows[label] = {**times, "speedups": [round(r, 2) for r in ratios], "speedup": round(statistics.median(ratios), 2),
                       "same_tokens": same, "new_tokens": sum(g[0].new_tokens for g in cached)}

    decoding = compare_decoding(engine, prefix, suffixes, args.max_new, args.rounds)
    memory = cache_memory(engine, prefix, suffixes, args.max_new)

    local, local_prefix, _ = plan_local(docs, fmt, cfg, window, seed=0)
    local_suffixes = [r["prompt"] for r in local][: 2 * args.batch]
    throughput = {}
    for batch in (1, args.batch):
        engine.batch_size = batch
        gens, seconds = timed(lambda: engine.generate_with_prefix(local_prefix["local"], local_suffixes,
                                                                  max_new_tokens=cfg.local_max_new_tokens))
        new = sum(g[0].new_tokens for g in gens)
        throughput[batch] = {"seconds": round(seconds, 2), "new_tokens": new, "tokens_per_s": round(new / seconds, 1)}

    result = {"model": args.model, "corpus": f"{args.run}:{args.world}" if args.run else "synthetic (20 facts x 5 lead-ins)",
              "docs": len(docs), "prefix_tokens": prefix_tokens, "targets": len(suffixes), "batch": args.batch,
              "threads": args.threads, "global": rows, "decoding": decoding, "cache_memory": memory, "local_throughput": throughput}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"model {args.model}; corpus {result['corpus']}: {len(docs)} docs, prefix {prefix_tokens} tokens; "
          f"{len(suffixes)} targets; batch {args.batch}; {args.threads} threads")
    print("| global, per run of all targets | cached prefix (s) | re-encoded (s) | speedup | same greedy tokens |")
    print("|---|---|---|---|---|")
    for label, r in rows.items():
        for i, (c, f, x) in enumerate(zip(r["cached_s"], r["reencoded_s"], r["speedups"])):
            print(f"| {label}, round {i + 1} | {c} | {f} | {x}x | {'yes' if r['same_tokens'] else 'NO'} |")
        if len(r["speedups"]) > 1:
            print(f"| {label}, median | | | {r['speedup']}x | |")
    print(f"\n| cached global generation, {args.max_new} new tokens | engine: shared-prefix attention (s) "
          "| per-row prefix attention (s) | per-row, growing cache (s) | speed-up vs per-row | vs per-row, growing |")
    print("|---|---|---|---|---|---|")
    for i, (a, b, c) in enumerate(zip(decoding["engine_s"], decoding["per_row_attention_s"],
                                      decoding["per_row_attention_growing_cache_s"])):
        print(f"| round {i + 1} | {a} | {b} | {c} | {b / a:.2f}x | {c / a:.2f}x |")
    print(f"same greedy tokens all three ways: {'yes' if decoding['same_tokens'] else 'NO'}")
    print(f"\nresident memory of one batch's KV cache ({memory['rows']} rows x {memory['positions']} positions): "
          f"{memory['engine_mib']} MiB with the prefix once (the engine), "
          f"{memory['prefix_in_every_row_mib']} MiB with it in every row")
    print("\n| local prompts, batch | seconds | new tokens | tokens/s |\n|---|---|---|---|")
    for batch, r in throughput.items():
        print(f"| {batch} | {r['seconds']} | {r['new_tokens']} | {r['tokens_per_s']} |")


if __name__ == "__main__":
    main()
