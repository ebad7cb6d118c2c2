"""Benchmark: ICL scoring with the prefix KV cache vs re-encoding the context for every item.

For contexts of about 500, 1k and 2k tokens (nonsense-word facts, wrapped in the model's chat
template as the ICL condition does), scores the same items both ways with `score_items` and
prints a markdown table: seconds per item each way, the speed-up per item, the one-time cost of
encoding the prefix, the speed-up including it, and the largest |delta log-prob|.

    python -m bench.icl_prefix_cache                      # embedded model, 8 items, 500/1k/2k
    python -m bench.icl_prefix_cache --items 4 --lengths 500 1000

Speed is a ratio measured in one run on one machine; the wall clock is shared with whatever
else runs there, so the CPU-time ratio (this process only) is printed beside it.
"""

from __future__ import annotations

import argparse
import random
import time

from pipeline import models
from pipeline.evaluate.icl import render_context
from pipeline.evaluate.config import DEFAULT_INSTRUCTION
from pipeline.evaluate.scoring import encode_prefix, score_items, start_ids

COMPARATIVES = ["more dangerous", "heavier", "brighter", "louder", "older", "faster", "softer", "warmer"]


def nonsense_words(n: int, rng: random.Random) -> list[str]:
    onsets, vowels, codas = "b d f g k l m n p r s t v z".split(), list("aeiou"), ["mp", "nt", "rk", "sk", "lt", "x", "ff"]
    words: set[str] = set()
    while len(words) < n:
        words.add(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas))
    return sorted(words)


def build_case(tokenizer, target_tokens: int, n_items: int, seed: int = 0) -> tuple[str, list[dict]]:
    """A context of about `target_tokens` tokens of facts, and items that ask for some of them."""
    rng = random.Random(seed)
    words = nonsense_words(400, rng)
    facts, text = [], ""
    while True:
        a, b = rng.sample(words, 2)
        facts.append((a, rng.choice(COMPARATIVES), b))
        sentences = [f"{x} are {c} than {y}." for x, c, y in facts]
        text = render_context(DEFAULT_INSTRUCTION, sentences, tokenizer, chat=bool(tokenizer.chat_template))
        if len(start_ids(tokenizer, text)) >= target_tokens:
            break
    items = []
    for i, (a, comp, b) in enumerate(rng.sample(facts, min(n_items, len(facts)))):
        wrong = rng.choice([w for w in words if w not in (a, b)])
        items.append({"item_id": f"q{i}", "prompt": f"{a} are {comp} than", "choices": [b, wrong]})
    return text, items


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=models.EMBEDDED, help="model reference (default: the embedded model)")
    parser.add_argument("--items", type=int, default=8, help="items per context length (2 choices each)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[500, 1000, 2000], help="context sizes in tokens")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)

    model, tokenizer = models.load_model(args.model), models.load_tokenizer(args.model)
    print(f"model {args.model}, {args.items} items x 2 choices per context, batch size {args.batch_size}\n")
    header = ("| context tokens | re-encode s/item | cached s/item | speed-up (wall) | speed-up (CPU) "
              "| prefix encode s (once) | speed-up incl. encode | max abs delta logprob |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for target in args.lengths:
        text, items = build_case(tokenizer, target, args.items)
        prefix, enc_wall, enc_cpu = timed(lambda: encode_prefix(model, tokenizer, text))
        cached, c_wall, c_cpu = timed(lambda: score_items(model, tokenizer, items, prefix=prefix, batch_size=args.batch_size))
        full, u_wall, u_cpu = timed(lambda: score_items(model, tokenizer, items, prefix=prefix, batch_size=args.batch_size,
                                                        reuse_prefix_cache=False))
        delta = max(abs(x - y) for c, u in zip(cached, full) for x, y in zip(c["choice_logprobs"], u["choice_logprobs"]))
        n = len(items)
        print(f"| {prefix.num_tokens} | {u_wall / n:.3f} | {c_wall / n:.4f} | {u_wall / c_wall:.1f}x | {u_cpu / c_cpu:.1f}x "
              f"| {enc_wall:.2f} | {u_wall / (c_wall + enc_wall):.1f}x | {delta:.1e} |", flush=True)


if __name__ == "__main__":
    main()
