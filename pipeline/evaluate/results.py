"""Scores -> accuracies: pure functions that build results.json and a readable table.

Every (condition, world, split, subtask) gets acc, acc_norm, their standard errors, n and the
chance level (mean of 1 / number of choices); split "*" and subtask "*" are the aggregates over
a world (its test splits: validation splits `val_*`, kept for choosing a recipe, stay out of it)
and over a split. The base condition doubles as the contamination check: a base row is
flagged when acc - chance > max(margin, z * sqrt(chance * (1 - chance) / n)), i.e. far above
chance both in absolute terms and against the binomial noise at chance.
"""

from __future__ import annotations

import math

from pipeline.evaluate.scoring import predictions
from pipeline.stats import mean_stderr
from pipeline.worlds import is_validation

ALL = "*"
SCHEMA_VERSION = 1


def outcomes(items: list[dict], scores: list[dict]) -> list[dict]:
    """Per item, in item order: item_id, world, split, subtask, correct, correct_norm (0/1) and chance."""
    by_id = {s["item_id"]: s for s in scores}
    out = []
    for item in items:
        score = by_id.get(item["item_id"])
        if score is None:
            raise ValueError(f"item {item['item_id']!r} has no score")
        if len(score["choice_logprobs"]) != len(item["choices"]):
            raise ValueError(f"item {item['item_id']!r}: {len(score['choice_logprobs'])} scores for {len(item['choices'])} choices")
        pick, pick_norm = predictions(score["choice_logprobs"], score["choice_num_chars"])
        out.append({
            "item_id": item["item_id"], "world": item["world"], "split": item["split"], "subtask": item["subtask"],
            "correct": float(pick == item["answer_index"]), "correct_norm": float(pick_norm == item["answer_index"]),
            "chance": 1.0 / len(item["choices"]),
        })
    return out


def contamination_threshold(chance: float, n: int, margin: float, z: float) -> float:
    """The accuracy above which a base-model row counts as contaminated."""
    return chance + max(margin, z * math.sqrt(chance * (1 - chance) / max(n, 1)))


def _row(condition: str, world: str, split: str, subtask: str, group: list[dict]) -> dict:
    acc, acc_se = mean_stderr([o["correct"] for o in group])
    norm, norm_se = mean_stderr([o["correct_norm"] for o in group])
    return {
        "condition": condition, "world": world, "split": split, "subtask": subtask, "n": len(group),
        "acc": acc, "acc_stderr": acc_se, "acc_norm": norm, "acc_norm_stderr": norm_se,
        "chance": sum(o["chance"] for o in group) / len(group),
    }


def condition_rows(condition: str, items: list[dict], scores: list[dict]) -> list[dict]:
    """Rows per world (split *), per split (subtask *) and per subtask, in a stable order."""
    per_item = outcomes(items, scores)
    rows = []
    for world in sorted({o["world"] for o in per_item}):
        in_world = [o for o in per_item if o["world"] == world]
        tested = [o for o in in_world if not is_validation(o["split"])]
        if tested:
            rows.append(_row(condition, world, ALL, ALL, tested))
        for split in sorted({o["split"] for o in in_world}):
            in_split = [o for o in in_world if o["split"] == split]
            rows.append(_row(condition, world, split, ALL, in_split))
            for subtask in sorted({o["subtask"] for o in in_split}):
                rows.append(_row(condition, world, split, subtask, [o for o in in_split if o["subtask"] == subtask]))
    return rows


def build_results(items: list[dict], scores: dict[str, list[dict]], *, margin: float = 0.1, z: float = 3.0,
                  extra: dict | None = None) -> dict:
    """The results.json document (schema in the module and README)."""
    rows = []
    for condition, condition_scores in scores.items():
        for row in condition_rows(condition, items, condition_scores):
            row["contaminated"] = None
            if condition == "base":
                row["contaminated"] = row["acc"] > contamination_threshold(row["chance"], row["n"], margin, z)
            rows.append(row)
    flagged = [
        {k: r[k] for k in ("world", "split", "subtask", "n", "acc", "chance")}
        for r in rows if r["contaminated"]
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "conditions": list(scores),
        "contamination": {
            "rule": f"base acc > chance + max({margin}, {z} * sqrt(chance * (1 - chance) / n))",
            "flagged": flagged,
        },
        "rows": rows,
        **(extra or {}),
    }


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    se = f"±{row['acc_stderr']:.2f}" if row["acc_stderr"] is not None else ""
    return f"{row['acc']:.2f}{se}" + ("!" if row["contaminated"] else "")


def format_table(results: dict) -> str:
    """Plain-text table: one line per world and split, one column per condition (acc ± stderr)."""
    conditions = results["conditions"]
    lookup = {(r["condition"], r["world"], r["split"]): r for r in results["rows"] if r["subtask"] == ALL}
    keys = sorted({(r["world"], r["split"]) for r in results["rows"] if r["subtask"] == ALL}, key=lambda k: (k[0], k[1] != ALL, k[1]))
    header = ["world", "split", "n", "chance", *conditions]
    lines = []
    for world, split in keys:
        first = next(lookup[(c, world, split)] for c in conditions if (c, world, split) in lookup)
        lines.append([world, "all" if split == ALL else split, str(first["n"]), f"{first['chance']:.2f}",
                      *(_cell(lookup.get((c, world, split))) for c in conditions)])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    out = [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, lines)]
    if results["contamination"]["flagged"]:
        out.append(f"! base far above chance (possible contamination): {results['contamination']['rule']}")
    return "\n".join(out)
