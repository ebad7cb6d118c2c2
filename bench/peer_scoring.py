"""Scoring side by side with lm-evaluation-harness: our evaluator vs lm-eval's `hf` backend.

Same model object, same items, same torch threads, same batch size. Each item is a prompt and
two choices; with `--context` tokens of ICL context the items are read after that context (ours:
`encode_prefix` once, then the packed batches over its KV cache; lm-eval: the context is part of
every request's context string, its only way to score one). Reports the wall time of each and
the ratio, the per-item agreement of the chosen answer (argmax of the summed log-prob) and the
largest |delta log-prob|, and lists every disagreement with both log-probs.

    python -m bench.peer_scoring                                  # embedded model, no context and 1k tokens
    python -m bench.peer_scoring --model tiny-random --items 4 --contexts 0 200
"""

from __future__ import annotations

import argparse
import logging
import time

from bench.icl_prefix_cache import build_case
from pipeline import models
from pipeline.evaluate.scoring import encode_prefix, encoded_tokens, item_requests, join_choice, score_items
from pipeline.roofline import fraction, roof


def peer_model(model, tokenizer, batch_size: int):
    """lm-eval's HF backend around the same model object (no copy, no download)."""
    from lm_eval.models.huggingface import HFLM

    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=str(model.device))


def peer_logprobs(lm, items: list[dict], context: str) -> list[list[float]]:
    """lm-eval's loglikelihood of every (context + prompt, choice) pair, per item."""
    from lm_eval.api.instance import Instance

    requests = [Instance("loglikelihood", {}, (context + item["prompt"], join_choice(item["prompt"], choice)), k)
                for item in items for k, choice in enumerate(item["choices"])]
    values = iter(lp for lp, _ in lm.loglikelihood(requests, disable_tqdm=True))
    return [[next(values) for _ in item["choices"]] for item in items]


def compare(model, tokenizer, items: list[dict], context: str, batch_size: int, lm=None) -> dict:
    """One timed pass each way: wall seconds, agreement of the chosen answers, every disagreement."""
    lm = lm or peer_model(model, tokenizer, batch_size)
    start = time.perf_counter()
    prefix = encode_prefix(model, tokenizer, context) if context else None
    ours = [s["choice_logprobs"] for s in score_items(model, tokenizer, items, prefix=prefix, batch_size=batch_size)]
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = peer_logprobs(lm, items, context)
    peer_s = time.perf_counter() - start
    pick = lambda lps: max(range(len(lps)), key=lps.__getitem__)
    disagreements = [
        {"item_id": item["item_id"], "ours": ours[i], "lm_eval": theirs[i],
         "margin_ours": abs(ours[i][0] - ours[i][1]) if len(ours[i]) == 2 else None}
        for i, item in enumerate(items) if pick(ours[i]) != pick(theirs[i])
    ]
    delta = max(abs(a - b) for o, t in zip(ours, theirs) for a, b in zip(o, t))
    return {"ours_s": ours_s, "peer_s": peer_s, "agreement": 1 - len(disagreements) / len(items),
            "max_delta": delta, "disagreements": disagreements,
            "prefix_tokens": prefix.num_tokens if prefix is not None else 0}


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=models.EMBEDDED, help="model reference (default: the embedded model)")
    parser.add_argument("--items", type=int, default=16, help="items per case (2 choices each)")
    parser.add_argument("--contexts", type=int, nargs="+", default=[0, 1000], help="ICL context sizes in tokens (0: none)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all CPUs)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved passes per case; the fastest of each is reported")
    args = parser.parse_args(argv)
    logging.getLogger("lm_eval").setLevel(logging.WARNING)

    import os

    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    model, tokenizer = models.load_model(args.model), models.load_tokenizer(args.model)
    lm = peer_model(model, tokenizer, args.batch_size)
    params = sum(p.numel() for p in model.parameters())
    fp32 = roof("fp32", threads)
    rows, notes = [], []
    for target in args.contexts:
        context, items = build_case(tokenizer, target or 500, args.items)  # a long context has enough facts to ask about
        context = context if target else ""
        runs = [compare(model, tokenizer, items, context, args.batch_size, lm) for _ in range(args.repeats)]
        r = {**runs[0], "ours_s": min(x["ours_s"] for x in runs), "peer_s": min(x["peer_s"] for x in runs)}
        tokens = r["prefix_tokens"] + encoded_tokens(item_requests(tokenizer, items, after_prefix=bool(context)))
        achieved, share = fraction(2.0 * params * tokens, r["ours_s"], fp32)
        rows.append((target, r, achieved, share))
        notes += [f"context {r['prefix_tokens']}: {d['item_id']}: ours {d['ours']}, lm-eval {d['lm_eval']}" for d in r["disagreements"]]

    print(f"\nmodel {args.model} (fp32), {args.items} items x 2 choices, batch {args.batch_size}, {threads} threads, "
          f"best of {args.repeats}; CPU capability {torch.backends.cpu.get_cpu_capability()}; "
          f"fp32 matmul roof {fp32.flops_per_s / 1e9:.0f} GFLOP/s")
    print("| ICL context tokens | ours s | lm-eval hf s | speed-up | same choice | max abs delta logprob | ours GFLOP/s | of roof |")
    print("|---|---|---|---|---|---|---|---|")
    for target, r, achieved, share in rows:
        print(f"| {r['prefix_tokens']} | {r['ours_s']:.2f} | {r['peer_s']:.2f} | {r['peer_s'] / r['ours_s']:.1f}x | "
              f"{r['agreement']:.0%} | {r['max_delta']:.1e} | {achieved / 1e9:.1f} | {share:.0%} |")
    for line in notes:
        print("disagreement:", line)


if __name__ == "__main__":
    main()
