"""Augmentation side by side with transformers: our engine vs a plain batched `generate` with a static cache.

Same prompts (the local augmentation prompts of a demo-sized synthetic corpus: a shared system
prefix, then one sentence each), same token ids, same batch size, greedy, same stop tokens and
torch threads. Ours: `HFEngine.generate_with_prefix`, the path the augment stage runs (the prefix
encoded once per engine, inside the timed pass). The peer: `model.generate` on every prompt in
full, left-padded, `cache_implementation="static"`, on its own copy of the model. Reports new
tokens/s each way, the ratio, and whether the greedy tokens are the same.

    python -m bench.peer_generation                                    # embedded model, 32 prompts at batch 16
    python -m bench.peer_generation --model tiny-random --prompts 4 --batch 4 --max-new 8
"""

from __future__ import annotations

import argparse
import os
import time

from bench.augment_prefix_cache import synthetic_docs
from pipeline import models
from pipeline.augment.config import AugmentConfig
from pipeline.augment.engines import HFEngine
from pipeline.augment.plan import plan_local
from pipeline.augment.prompts import PromptFormat
from pipeline.section import ModelConfig


def local_prompts(model: ModelConfig, n: int) -> tuple[str, list[str]]:
    """(shared prefix, suffixes) of `n` local augmentation prompts, as the augment stage plans them."""
    fmt = PromptFormat(models.load_tokenizer(model))
    cfg = AugmentConfig(generator=model, max_sentences_per_world=n)
    reqs, prefixes, _ = plan_local(synthetic_docs(), fmt, cfg, models.context_window(model), seed=0)
    return prefixes["local"], [r["prompt"] for r in reqs][:n]


def peer_generate(model, rows: list[list[int]], batch: int, max_new: int, pad_id: int, stop_ids: list[int]) -> list[tuple[int, ...]]:
    """transformers' own batched greedy decoding into a static cache: new token ids per row, cut at the first stop."""
    import torch

    out: list[tuple[int, ...]] = []
    for start in range(0, len(rows), batch):
        chunk = rows[start:start + batch]
        width = max(len(r) for r in chunk)
        ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in chunk])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in chunk])
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                                 cache_implementation="static", eos_token_id=stop_ids, pad_token_id=pad_id)
        for row in gen[:, width:].tolist():
            cut = next((i for i, t in enumerate(row) if t in stop_ids), len(row))
            out.append(tuple(row[:cut]))
    return out


def run_engine(engine: HFEngine, prefix: str, suffixes: list[str], max_new: int):
    """(generations, seconds) of our engine; it pays for encoding the prefix, once, inside its time."""
    engine.clear_prefix_cache()
    start = time.perf_counter()
    gens = [g[0] for g in engine.generate_with_prefix(prefix, suffixes, max_new_tokens=max_new)]
    return gens, time.perf_counter() - start


def run_peer(engine: HFEngine, peer, prefix: str, suffixes: list[str], max_new: int):
    """(new token ids per prompt, seconds) of `generate` on the same token ids as the engine reads."""
    rows = [engine.encode(prefix) + engine.encode(s, first=False) for s in suffixes]
    start = time.perf_counter()
    ids = peer_generate(peer, rows, engine.batch_size, max_new, engine.pad_id, engine.stop_ids)
    return ids, time.perf_counter() - start


def compare(engine: HFEngine, peer, prefix: str, suffixes: list[str], max_new: int) -> dict:
    """One timed pass each way over the same token ids: seconds, new tokens, same greedy tokens."""
    ours, ours_s = run_engine(engine, prefix, suffixes, max_new)
    theirs, peer_s = run_peer(engine, peer, prefix, suffixes, max_new)
    same = [g.token_ids == t for g, t in zip(ours, theirs)]
    return {"ours_s": ours_s, "peer_s": peer_s, "ours_tokens": sum(g.new_tokens for g in ours),
            "peer_tokens": sum(len(t) for t in theirs), "same": sum(same) / len(same)}


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=models.EMBEDDED)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16, help="prompts per generate() call (augment.batch_size)")
    parser.add_argument("--max-new", type=int, default=AugmentConfig().local_max_new_tokens)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all CPUs)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved passes; the fastest of each is reported")
    args = parser.parse_args(argv)

    threads = args.threads or os.cpu_count() or 1
    model = ModelConfig(ref=args.model)
    prefix, suffixes = local_prompts(model, args.prompts)
    engines = {"our engine (shared-prefix attention)": HFEngine(model, batch_size=args.batch, threads=threads),
               "our engine, plain SDPA": HFEngine(model, batch_size=args.batch, threads=threads, share_prefix_attention=False)}
    first = next(iter(engines.values()))
    peer = models.load_model(model)
    run_peer(first, peer, prefix, suffixes[:2], 2)  # warm-up: first calls allocate and pick kernels
    for engine in engines.values():
        run_engine(engine, prefix, suffixes[:2], 2)
    seconds: dict[str, list[float]] = {label: [] for label in ["generate", *engines]}
    for _ in range(args.repeats):  # interleaved, so a busy spell hits every path
        reference, t = run_peer(first, peer, prefix, suffixes, args.max_new)
        seconds["generate"].append(t)
        same, tokens_of = {}, {}
        for label, engine in engines.items():
            gens, t = run_engine(engine, prefix, suffixes, args.max_new)
            seconds[label].append(t)
            same[label] = sum(g.token_ids == r for g, r in zip(gens, reference)) / len(gens)
            tokens_of[label] = sum(g.new_tokens for g in gens)
    tokens = sum(len(r) for r in reference)
    prompt_tokens = sum(len(first.encode(prefix)) + len(first.encode(s, first=False)) for s in suffixes)
    base = tokens / min(seconds["generate"])
    print(f"\nmodel {args.model} (fp32), {len(suffixes)} local prompts ({prompt_tokens} prompt tokens, a "
          f"{len(first.encode(prefix))}-token shared prefix), batch {args.batch}, up to {args.max_new} new tokens, greedy, "
          f"{threads} threads, best of {args.repeats}; CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| path | seconds | new tokens | tokens/s | vs generate | same greedy tokens |\n|---|---|---|---|---|---|")
    print(f"| transformers generate, static cache | {min(seconds['generate']):.2f} | {tokens} | {base:.1f} | 1.00x | — |")
    for label in engines:
        rate = tokens_of[label] / min(seconds[label])
        print(f"| {label} | {min(seconds[label]):.2f} | {tokens_of[label]} | {rate:.1f} | {rate / base:.2f}x | {same[label]:.0%} of prompts |")


if __name__ == "__main__":
    main()
