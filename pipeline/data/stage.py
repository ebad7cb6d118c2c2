"""The `data` stage: build every enabled world, write docs / items / facts, print a summary.

Writes `<run>/data/docs.parquet` (Doc, origin "train"), `items.parquet` (Item) and
`facts.parquet` (Fact). Every world is built and every row validated before any file is
written, and each file is written atomically, so a bad config or input leaves no output. The
summary counts, per world and split, documents, items, choices per item and tokens (with the
configured model's tokenizer): training tokens for the documents, prompt + all choices for items.
"""

from __future__ import annotations

import logging
from collections import defaultdict

from pipeline.config import ConfigError, RunConfig
from pipeline.logs import Progress
from pipeline.records import Doc, Fact, Item, validate_rows, write_records
from pipeline.runs import Run
from pipeline.worlds import WORLDS, WorldError, world_module

log = logging.getLogger(__name__)
NEEDS_RAY = False
#: What the files depend on (see pipeline.fingerprint). Not the model: the summary's token counts
#: use `model.ref`'s tokenizer, but the files do not, so changing the model keeps the data.
CONFIG_KEYS = ("seed", "data")
UPSTREAM = ()


def input_files(cfg: RunConfig) -> list[str]:
    """Files outside the run the worlds read: the celebrities folder, the user's corpus and items."""
    d = cfg.data
    refs = [d.celebrities.path] if d.celebrities else []
    if d.corpus:
        refs += [d.corpus.path] + ([d.corpus.items] if d.corpus.items else [])
    return refs


def outputs(cfg: RunConfig) -> list[str]:
    return ["data/docs.parquet", "data/items.parquet", "data/facts.parquet"]


def build_worlds(cfg: RunConfig) -> tuple[list[dict], list[dict], list[dict]]:
    """Docs, items and facts of every enabled world, validated; a config error names the key."""
    names = cfg.data.enabled()
    if not names:
        raise ConfigError(f"data: no world is enabled; add at least one of {', '.join(WORLDS)} to the data section")
    docs, items, facts = [], [], []
    with Progress(len(names), "building worlds", unit="worlds", logger=log) as progress:
        for name in names:
            try:
                d, i, f = world_module(name).build(getattr(cfg.data, name), cfg.seed)
            except WorldError as err:
                raise ConfigError(f"data.{name}: {err}") from None
            docs += d
            items += i
            facts += f
            progress.update(1, world=name)
    return (validate_rows(Doc, docs, "data: "), validate_rows(Item, items, "data: "),
            validate_rows(Fact, facts, "data: "))


def run(cfg: RunConfig, run: Run) -> dict:
    docs, items, facts = build_worlds(cfg)
    write_records(run.path("data", "docs.parquet"), Doc, docs)
    write_records(run.path("data", "items.parquet"), Item, items)
    write_records(run.path("data", "facts.parquet"), Fact, facts)
    summary = summarise(docs, items, facts, _token_counter(cfg))
    log.info("%s", format_summary(summary, cfg.model.ref))
    return summary


def _token_counter(cfg: RunConfig):
    from pipeline.models import load_tokenizer

    tok = load_tokenizer(cfg.model)

    def count(texts: list[str]) -> int:
        if not texts:
            return 0
        return sum(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])

    return count


def summarise(docs: list[dict], items: list[dict], facts: list[dict], count_tokens) -> dict:
    """{world: {"docs", "facts", "tokens", "splits": {split: {"items", "choices", "tokens"}}}}."""
    out: dict = {}
    by_world_docs: dict[str, list[str]] = defaultdict(list)
    for d in docs:
        by_world_docs[d["world"]].append(d["text"])
    by_split: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for it in items:
        by_split[(it["world"], it["split"])].append(it)
    worlds = list(dict.fromkeys([d["world"] for d in docs] + [it["world"] for it in items]))
    for w in worlds:
        splits = {}
        for (world, split), rows in sorted(by_split.items()):
            if world != w:
                continue
            sizes = sorted({len(r["choices"]) for r in rows})
            texts = [r["prompt"] + "".join(r["choices"]) for r in rows]
            splits[split] = {"items": len(rows), "choices": sizes[0] if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}",
                             "tokens": count_tokens(texts)}
        out[w] = {"docs": len(by_world_docs[w]), "facts": sum(f["world"] == w for f in facts),
                  "tokens": count_tokens(by_world_docs[w]), "splits": splits}
    return {"worlds": out, "docs": len(docs), "items": len(items), "facts": len(facts)}


def format_summary(summary: dict, tokenizer: str) -> str:
    rows = [("world", "split", "docs", "items", "choices", "tokens")]
    for w, s in summary["worlds"].items():
        rows.append((w, "train", s["docs"], "", "", s["tokens"]))
        for split, x in s["splits"].items():
            rows.append((w, split, "", x["items"], x["choices"], x["tokens"]))
    rows.append(("total", "", summary["docs"], summary["items"], "", ""))
    widths = [max(len(str(r[i])) for r in rows) for i in range(6)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  " + "  ".join(f"{str(v):>{widths[i]}}" for i, v in enumerate(r[2:], 2))
             for r in rows]
    return "\n".join(lines + [f"tokens: {tokenizer} tokenizer (train: document text; splits: prompt + all choices)"])
