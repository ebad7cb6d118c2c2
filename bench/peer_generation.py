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


def compare(engine: HFEngine, peer, prefix: str, suffixes: list[str], max_new: int) -> dict:
    """One timed pass each way over the same token ids: seconds, new tokens, same greedy tokens."""
    engine.clear_prefix_cache()  # ours pays for encoding the prefix, once, inside its time
    start = time.perf_counter()
    ours = [g[0] for g in engine.generate_with_prefix(prefix, suffixes, max_new_tokens=max_new)]
    ours_s = time.perf_counter() - start
    rows = [engine.encode(prefix) + engine.encode(s, first=False) for s in suffixes]
    start = time.perf_counter()
    theirs = peer_generate(peer, rows, engine.batch_size, max_new, engine.pad_id, engine.stop_ids)
    peer_s = time.perf_counter() - start
    same = [g.token_ids == t for g, t in zip(ours, theirs)]
    return {"ours_s": ours_s, "peer_s": peer_s, "ours_tokens": sum(g.new_tokens for g in ours),
            "peer_tokens": sum(len(t) for t in theirs), "same": sum(same) / len(same),
            "prompt_tokens": sum(len(r) for r in rows)}


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
    engine = HFEngine(model, batch_size=args.batch, threads=threads)
    peer = models.load_model(model)
    runs = [compare(engine, peer, prefix, suffixes, args.max_new) for _ in range(args.repeats)]
    ours_s, peer_s = min(r["ours_s"] for r in runs), min(r["peer_s"] for r in runs)
    r = runs[0]
    print(f"\nmodel {args.model} (fp32), {len(suffixes)} local prompts ({r['prompt_tokens']} prompt tokens), batch "
          f"{args.batch}, up to {args.max_new} new tokens, greedy, {threads} threads, best of {args.repeats}; "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    print("| path | seconds | new tokens | tokens/s | vs generate | same greedy tokens |\n|---|---|---|---|---|---|")
    print(f"| transformers generate, static cache | {peer_s:.2f} | {r['peer_tokens']} | {r['peer_tokens'] / peer_s:.1f} | 1.00x | — |")
    print(f"| our engine (shared prefix) | {ours_s:.2f} | {r['ours_tokens']} | {r['ours_tokens'] / ours_s:.1f} | "
          f"{(r['ours_tokens'] / ours_s) / (r['peer_tokens'] / peer_s):.2f}x | {r['same']:.0%} of prompts |")


if __name__ == "__main__":
    main()
