"""Plots of a run: grouped bars of accuracy per condition for each world and split (matplotlib)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure  # a Figure drawn straight to a file: no pyplot, no GUI backend

from pipeline.conditions import COLOURS
from pipeline.records import atomic_path


def accuracy_plot(rows: list[dict], world: str, conditions: list[str], path: Path) -> Path:
    """Bars: splits on the x axis, one bar per condition, standard-error whiskers, chance lines.

    rows: split-level results of one world, each with condition, split, acc, stderr, chance, n.
    """
    splits = sorted({r["split"] for r in rows}, key=_split_order)
    conds = [c for c in conditions if any(r["condition"] == c for r in rows)]
    by_key = {(r["condition"], r["split"]): r for r in rows}
    width = 0.8 / max(len(conds), 1)
    fig = Figure(figsize=(max(6.0, 1.6 * len(splits) * max(1, len(conds)) / 3), 4.2), dpi=120)
    ax = fig.subplots()
    for i, cond in enumerate(conds):
        xs, ys, errs = [], [], []
        for j, split in enumerate(splits):
            r = by_key.get((cond, split))
            if r is None:
                continue
            xs.append(j - 0.4 + width * (i + 0.5))
            ys.append(r["acc"])
            errs.append(r["stderr"])
        ax.bar(xs, ys, width * 0.92, yerr=errs, capsize=2, label=cond,
               color=COLOURS.get(cond, None), edgecolor="black", linewidth=0.4)
    for j, split in enumerate(splits):
        chance = next((r["chance"] for r in rows if r["split"] == split), None)
        if chance is not None:
            ax.hlines(chance, j - 0.45, j + 0.45, colors="black", linestyles="dashed", linewidth=1,
                      label="chance" if j == 0 else None)
    n_items = {s: next((r["n"] for r in rows if r["split"] == s), 0) for s in splits}
    ax.set_xticks(range(len(splits)), [f"{s}\n(n={n_items[s]})" for s in splits])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{world}: accuracy by condition (bars: ±1 standard error)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


_ORDER = ["rephrase", "reversal", "syllogism", "composition", "category_holdout"]


def _split_order(split: str) -> tuple[int, str]:
    return (_ORDER.index(split) if split in _ORDER else len(_ORDER), split)
