"""Audit of the augmentations against each world's ground truth.

Every augmented sentence is labelled with the world contract: `parse(sentence, facts)` gives the
triples it asserts (None: unverifiable); all of them in `closure(facts)`: entailed; otherwise
contradicted; `entailed_new` counts the entailed sentences that state more than the facts (a
reversal or a deduction). Per world and strategy: precision (entailed / all sentences),
contradiction rate, and coverage: the share of test items whose needed triples (those of prompt + correct choice)
some augmented sentence of that strategy states, overall and per split (reversal coverage is
the `reversal` split's). Pure functions; the stage passes in each world's module.
"""

from __future__ import annotations

from collections import Counter, defaultdict

LABELS = ("entailed", "contradicted", "unverifiable")
EXAMPLES_KEPT = 5


def label(triples, closure: set) -> str:
    if not triples:
        return "unverifiable"
    return "entailed" if all(tuple(t) in closure for t in triples) else "contradicted"


def item_triples(item: dict, module, facts: list[dict]):
    """Triples a test item needs: those of its prompt followed by its correct choice (None: unparsed)."""
    text = item["prompt"].rstrip() + " " + item["choices"][item["answer_index"]].strip()
    triples = module.parse(text, facts)
    return [tuple(t) for t in triples] if triples else None


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


def audit_world(world: str, module, facts: list[dict], items: list[dict], rows_by_strategy: dict[str, list[dict]]) -> dict:
    """Labels, precision, contradiction rate and coverage of each strategy's rows in one world."""
    closure = {tuple(t) for t in module.closure(facts)}
    stated_facts = {(f["subject"], f["relation"], f["object"]) for f in facts}
    needed = [(item, item_triples(item, module, facts)) for item in items]
    parsed = [(item, t) for item, t in needed if t is not None]
    out: dict = {"items": len(items), "items_unparsed": len(needed) - len(parsed), "strategies": {}}
    for strategy, rows in rows_by_strategy.items():
        tally: Counter = Counter()
        stated: set = set()
        examples: dict[str, list[str]] = defaultdict(list)
        for row in rows:
            triples = module.parse(row["text"], facts)
            verdict = label(triples, closure)
            tally[verdict] += 1
            if verdict == "entailed" and any(tuple(t) not in stated_facts for t in triples):
                tally["entailed_new"] += 1  # a reversal or deduction, not a restated fact
            if triples:
                stated.update(tuple(t) for t in triples)
            if len(examples[verdict]) < EXAMPLES_KEPT:
                examples[verdict].append(row["text"])
        by_split: dict[str, dict] = {}
        for item, triples in parsed:
            entry = by_split.setdefault(item["split"], {"items": 0, "covered": 0})
            entry["items"] += 1
            entry["covered"] += all(t in stated for t in triples)
        for entry in by_split.values():
            entry["coverage"] = _ratio(entry["covered"], entry["items"])
        total = sum(tally[name] for name in LABELS)
        covered = sum(e["covered"] for e in by_split.values())
        out["strategies"][strategy] = {
            "sentences": total,
            **{name: tally[name] for name in LABELS},
            "entailed_new": tally["entailed_new"],
            "precision": _ratio(tally["entailed"], total),
            "contradiction_rate": _ratio(tally["contradicted"], total),
            "coverage": _ratio(covered, len(parsed)),
            "reversal_coverage": by_split.get("reversal", {}).get("coverage"),
            "coverage_by_split": dict(sorted(by_split.items())),
            "examples": {k: examples[k] for k in LABELS if examples[k]},
        }
    return out


def build_audit(
    rows: list[dict], items: list[dict], facts: list[dict], modules: dict, strategies: list[str], generation: dict,
) -> dict:
    """audit.json: per world (that has a world module) and strategy, plus the generation counts."""
    worlds = sorted({r["world"] for r in items} | {f["world"] for f in facts} | {r["world"] for r in rows})
    out: dict = {"worlds": {}, "generation": generation}
    for world in worlds:
        module = modules.get(world)
        if module is None:
            out["worlds"][world] = {"auditable": False, "reason": "no world module with parse/closure for this world"}
            continue
        world_facts = [f for f in facts if f["world"] == world]
        if not world_facts:
            out["worlds"][world] = {"auditable": False, "reason": "no ground-truth facts for this world (e.g. a user corpus)"}
            continue
        by_strategy = {s: [r for r in rows if r["world"] == world and r["origin"] == f"augment:{s}"] for s in strategies}
        world_items = [i for i in items if i["world"] == world]
        out["worlds"][world] = {"auditable": True, **audit_world(world, module, world_facts, world_items, by_strategy)}
    return out


def format_audit(audit: dict) -> str:
    """The audit as a plain-text table (printed by the stage)."""
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    lines = [f"{'world':<12} {'strategy':<8} {'sentences':>9} {'precision':>9} {'new':>5} {'contra':>7} {'coverage':>8} {'reversal':>8}"]
    for world, strategy, s in audit_entries(audit):
        if strategy is None:
            lines.append(f"{world:<12} (not audited: {s})")
            continue
        lines.append(
            f"{world:<12} {strategy:<8} {s['sentences']:>9} {pct(s['precision']):>9} {s['entailed_new']:>5} "
            f"{pct(s['contradiction_rate']):>7} {pct(s['coverage']):>8} {pct(s['reversal_coverage']):>8}"
        )
    return "\n".join(lines)


def audit_entries(audit: dict):
    """(world, strategy, stats) per audited world and strategy, and (world, None, reason) per
    world that could not be audited; worlds in name order."""
    for world, entry in sorted(audit.get("worlds", {}).items()):
        if not entry.get("auditable"):
            yield world, None, entry.get("reason", "not auditable")
            continue
        for strategy, stats in entry["strategies"].items():
            yield world, strategy, stats
