"""The work of an augmentation run: prompts, grouped into shards, with window checks.

Pure functions over the training documents and a `PromptFormat` (tokenizer). The plan is
deterministic for a given config and data, so a re-run finds the same shards and skips the
finished ones.

- Local: the distinct sentences of a world's training documents (a seeded sample when capped);
  one request per sentence and sample, all after one shared prefix (the worked examples).
- Global: the world's documents packed, in order, into prefix groups that fit the prefix budget
  (the whole corpus when it fits); target documents are taken group by group (seeded order),
  so a capped run encodes few prefixes. A shard never spans two groups.
A prompt that cannot fit the context window with its new tokens is skipped and counted as
`too_long`, or is an error naming the document when `strict` is set.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter, defaultdict

from pipeline.augment.config import AugmentConfig
from pipeline.augment.prompts import PromptFormat, global_messages, local_messages
from pipeline.sentences import split_sentences


#: Prefix key of the local prompts' worked examples (one prefix for every sentence).
LOCAL_PREFIX = "local"


class PromptTooLong(ValueError):
    """A document whose prompt exceeds the generator's context window (strict mode)."""


def stable_seed(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "big") & 0x7FFFFFFF


def seeded_subset(items: list, limit: int | None, seed: int, key: str) -> list:
    """At most `limit` of `items`: a sample seeded by (seed, key) that keeps their order; None keeps all."""
    if not limit or len(items) <= limit:
        return items
    rng = random.Random(stable_seed(seed, key))
    return [items[i] for i in sorted(rng.sample(range(len(items)), limit))]


def _too_long(skipped: Counter, strict: bool, what: str, tokens: int, window: int) -> None:
    if strict:
        raise PromptTooLong(f"{what}: its prompt needs {tokens} tokens with the new tokens, over the context window of {window} (augment.strict is set)")
    skipped["too_long"] += 1


def by_world(train_docs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for doc in train_docs:
        out[doc["world"]].append(doc)
    return dict(sorted(out.items()))


def plan_local(train_docs: list[dict], fmt: PromptFormat, cfg: AugmentConfig, window: int, seed: int):
    """Requests for local augmentation, the shared examples prefix, and skip counts per 'local/<world>'."""
    requests, skipped = [], {}
    prefix = fmt.render_split(local_messages("x", split_marker=True))[0]
    prefix_tokens = fmt.count(prefix)
    for world, docs in by_world(train_docs).items():
        tally = skipped.setdefault(f"local/{world}", Counter())
        sources: dict[str, dict] = {}
        for doc in docs:
            for sentence in split_sentences(doc["text"]):
                sources.setdefault(sentence, doc)
        sentences = list(sources)
        sentences = seeded_subset(sentences, cfg.max_sentences_per_world, seed, f"local/{world}")
        for i, sentence in enumerate(sentences):
            doc = sources[sentence]
            head, suffix = fmt.render_split(local_messages(sentence, split_marker=True))
            if head != prefix:
                raise ValueError(f"local prompt of {sentence!r}: its examples prefix differs from the shared one")
            tokens = prefix_tokens + fmt.count(suffix, first=False) + cfg.local_max_new_tokens
            if tokens > window:
                _too_long(tally, cfg.strict, f"doc {doc['doc_id']!r} (world {world!r}, local sentence {sentence[:60]!r})", tokens, window)
                continue
            for k in range(cfg.samples_per_sentence):
                rid = f"local/{world}/{i:06d}/{k}"
                requests.append({
                    "request_id": rid, "strategy": "local", "world": world, "source_doc_id": doc["doc_id"],
                    "source_text": sentence, "prefix_key": LOCAL_PREFIX, "prompt": suffix,
                    "seed": stable_seed(seed, rid), "max_new_tokens": cfg.local_max_new_tokens,
                })
    return requests, {LOCAL_PREFIX: prefix}, {k: dict(v) for k, v in skipped.items()}


def pack_groups(doc_tokens: list[int], limit: int, max_docs: int | None) -> list[list[int]]:
    """Indices of documents packed in order into groups of at most `limit` tokens (and max_docs)."""
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, n in enumerate(doc_tokens):
        if current and (used + n > limit or (max_docs and len(current) >= max_docs)):
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        groups.append(current)
    return groups


def plan_global(train_docs: list[dict], fmt: PromptFormat, cfg: AugmentConfig, window: int, seed: int):
    """Requests for global augmentation, the prefix text of each group, and skip counts."""
    requests, prefixes, skipped = [], {}, {}
    new = cfg.global_max_new_tokens
    for world, docs in by_world(train_docs).items():
        tally = skipped.setdefault(f"global/{world}", Counter())
        base = fmt.count(fmt.render_split(global_messages([], "x", split_marker=True))[0])
        suffix_of = {d["doc_id"]: fmt.render_split(global_messages([], d["text"], split_marker=True))[1] for d in docs}
        suffix_tokens = {k: fmt.count(v, first=False) for k, v in suffix_of.items()}
        doc_tokens = {d["doc_id"]: fmt.count(d["text"].strip() + "\n\n", first=False) for d in docs}
        prefix_cap = min(cfg.global_prefix_max_tokens or window, window)
        fitting = []
        for d in docs:
            need = base + doc_tokens[d["doc_id"]] + suffix_tokens[d["doc_id"]] + new
            if need > window or base + doc_tokens[d["doc_id"]] > prefix_cap:
                _too_long(tally, cfg.strict, f"doc {d['doc_id']!r} (world {world!r}, global)", need, window)
            else:
                fitting.append(d)
        if not fitting:
            continue
        limit = min(prefix_cap, window - new - max(suffix_tokens[d["doc_id"]] for d in fitting)) - base
        groups = pack_groups([doc_tokens[d["doc_id"]] for d in fitting], limit, cfg.global_group_docs)
        rng = random.Random(stable_seed(seed, f"global/{world}"))
        order = list(range(len(groups)))
        rng.shuffle(order)
        chosen: list[tuple[int, int]] = []
        for g in order:
            members = list(groups[g])
            rng.shuffle(members)
            for m in members:
                if cfg.max_docs_per_world and len(chosen) >= cfg.max_docs_per_world:
                    break
                chosen.append((g, m))
        for g, m in sorted(chosen):
            target = fitting[m]
            key = f"{world}/g{g:03d}"
            if key not in prefixes:
                texts = [fitting[i]["text"] for i in groups[g]]
                prefixes[key] = fmt.render_split(global_messages(texts, "x", split_marker=True))[0]
            tokens = fmt.count(prefixes[key]) + suffix_tokens[target["doc_id"]] + new
            if tokens > window:
                _too_long(tally, cfg.strict, f"doc {target['doc_id']!r} (world {world!r}, global group {g})", tokens, window)
                continue
            for k in range(cfg.samples_per_doc):
                rid = f"global/{world}/g{g:03d}/{m:06d}/{k}"
                requests.append({
                    "request_id": rid, "strategy": "global", "world": world, "source_doc_id": target["doc_id"],
                    "source_text": target["text"], "prefix_key": key, "prompt": suffix_of[target["doc_id"]],
                    "seed": stable_seed(seed, rid), "max_new_tokens": new,
                })
    return requests, prefixes, {k: dict(v) for k, v in skipped.items()}


def make_shards(requests: list[dict], prefixes: dict[str, str], shard_size: int) -> list[dict]:
    """Shards of at most shard_size requests; one strategy, world and prefix per shard."""
    runs: dict[tuple, list[dict]] = {}
    for r in requests:
        runs.setdefault((r["strategy"], r["world"], r["prefix_key"]), []).append(r)
    shards, index = [], Counter()
    for (strategy, world, key), reqs in runs.items():
        for start in range(0, len(reqs), shard_size):
            shards.append({
                "shard": f"{strategy}-{world}-{index[(strategy, world)]:04d}",
                "prefix_key": key, "prefix": prefixes[key], "requests": reqs[start:start + shard_size],
            })
            index[(strategy, world)] += 1
    return shards


def fingerprint(shards: list[dict], settings: dict) -> str:
    """A hash of everything that determines the shards' outputs (a changed plan starts over)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for shard in shards:
        h.update(json.dumps([shard["shard"], shard["prefix"], shard["requests"]], sort_keys=True).encode())
    return h.hexdigest()
