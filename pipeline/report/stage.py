"""The `report` stage: report.md, plots/*.png and the cost model, from earlier stages' files.

Reads results.json and scores/ (evaluate), data/items.parquet, augment/audit.json (augment, if it
ran) and the manifests (measured stage times and token counts); writes report.md and plots/
atomically. report.md opens with the claims table (`claims.py`: the paper's findings and the
pipeline's controls, each decided on the same items with an exact 95% interval), then accuracy
per world and split, the audit and the cost model. Pure Python: no Ray, no model weights loaded
(the parameter count is read from the safetensors headers).
"""

from __future__ import annotations

import json
import logging
from collections import Counter

from pipeline import roofline
from pipeline.augment.audit import audit_entries
from pipeline.conditions import FT_STRATEGIES, GENERATOR_ICL
from pipeline.config import RunConfig
from pipeline.logs import results_logger
from pipeline.records import write_text
from pipeline.report.claims import decide
from pipeline.report.cost import CostInputs, cost_rows, format_flops, roofline_lines, roofline_rows
from pipeline.report.inputs import cost_inputs, item_outcomes, split_rows
from pipeline.report.plots import accuracy_plot
from pipeline.runs import Run

log = logging.getLogger(__name__)
NEEDS_RAY = False
#: What the report depends on (see pipeline.fingerprint): its own section, the names it prints,
#: the model (its parameter count), and the stages whose results, audit and timings it reads.
CONFIG_KEYS = ("name", "seed", "model.ref", "conditions", "report")


def upstream(cfg: RunConfig) -> tuple[str, ...]:
    return (("data",) + (("augment",) if cfg.strategies() else ()) + (("train",) if cfg.ft_conditions() else ())
            + ("evaluate",))


def model_refs(cfg: RunConfig) -> dict:
    return {"model": cfg.model}


def outputs(cfg: RunConfig) -> list[str]:
    return ["report.md", "plots"]


def run(cfg: RunConfig, run: Run) -> dict:
    run.require("evaluate")
    results = json.loads(run.path("results.json").read_text())
    rows = split_rows(results)
    conditions = [c for c in cfg.conditions if any(r["condition"] == c for r in rows)]
    worlds = sorted({r["world"] for r in rows})
    plots = []
    if cfg.report.plots:
        for world in worlds:
            path = accuracy_plot([r for r in rows if r["world"] == world], world, conditions,
                                 run.path("plots", f"{world}.png"))
            plots.append(path.relative_to(run.dir).as_posix())
    audit_path = run.path("augment", "audit.json")
    audit = json.loads(audit_path.read_text()) if audit_path.is_file() else None
    claims = decide(item_outcomes(run, conditions))
    inputs = cost_inputs(cfg, run)
    costs = cost_rows(inputs, conditions)
    text = render(cfg, rows, conditions, results, plots, audit, costs, inputs, claims)
    write_text(run.path("report.md"), text)
    results_logger("report").info("%s", text.split("## Augmentation audit")[0].rstrip())
    return {"plots": plots, "worlds": worlds, "conditions": conditions, "claims": dict(Counter(c["verdict"] for c in claims)),
            "cost": [{k: v for k, v in r.items()} for r in costs]}


def render(cfg, rows, conditions, results, plots, audit, costs, inputs: CostInputs, claims: list[dict]) -> str:
    writer = (f"; augmentations written by `{cfg.augment.generator.ref}`"
              + (" (its own ICL: the icl-generator column)" if GENERATOR_ICL in conditions else "")
              if cfg.strategies() and cfg.augment.generator.ref != cfg.model.ref else "")
    out = [f"# Report: {cfg.name}", "",
           f"Model `{cfg.model.ref}`{writer}; conditions {', '.join(conditions)}; seed {cfg.seed}. "
           "Accuracy is likelihood multiple choice (the option with the highest summed "
           "log-probability wins); ± is one standard error.", ""]
    flagged = results.get("contamination", {}).get("flagged", [])
    if flagged:
        out += ["**Contamination check failed:** the base model scores far above chance on "
                + ", ".join(f"{c['world']}/{c['split']}/{c['subtask']} ({c['acc']:.2f} vs chance {c['chance']:.2f}, n {c['n']})"
                             for c in flagged)
                + ": these tests do not need the new knowledge.", ""]
    out += _claims_lines(claims)
    out += ["## Accuracy", ""]
    for world in sorted({r["world"] for r in rows}):
        out += [f"### {world}", "", "| split | n | chance | " + " | ".join(conditions) + " |",
                "|---|---|---|" + "---|" * len(conditions)]
        by = {(r["split"], r["condition"]): r for r in rows if r["world"] == world}
        for split in sorted({s for s, _ in by}):
            first = next(r for (s, _), r in by.items() if s == split)
            cells = [f"{by[(split, c)]['acc']:.2f} ± {by[(split, c)]['stderr']:.2f}" if (split, c) in by else "—" for c in conditions]
            out.append(f"| {split} | {first['n']} | {first['chance']:.2f} | " + " | ".join(cells) + " |")
        plot = f"plots/{world}.png"
        out += ["", f"![{world}]({plot})" if plot in plots else "", ""]
    out += ["## Augmentation audit", ""]
    out += _audit_lines(audit) if audit else ["No augmentation ran in this run.", ""]
    out += ["## Cost", "",
            f"Model parameters: {inputs.params:,}"
            + (f"; the generator's: {inputs.generator_params:,}" if inputs.generator_params else "")
            + f". Training = {4 if inputs.lora else 6} × params × trained tokens"
            f"{' (LoRA: no gradients of the frozen weights)' if inputs.lora else ''}; augmentation = "
            "2 × the generator's params × the tokens it ran (each shared prompt prefix once); a query = 2 × params × (context + question) tokens. "
            "Break-even: queries after which the condition's total cost falls below ICL's.", "",
            "| condition | training | augmentation | up front | tokens / query | per query | break-even vs ICL (queries) |",
            "|---|---|---|---|---|---|---|"]
    for r in costs:
        be = r["break_even_vs_icl"]
        be_text = "—" if be is None and r["condition"] not in FT_STRATEGIES else ("never" if be is None else f"{be:,.0f}")
        out.append(f"| {r['condition']} | {format_flops(r['train_flops'])} | {format_flops(r['augment_flops'])} | "
                   f"{format_flops(r['upfront_flops'])} | {r['query_tokens']:,.0f} | {format_flops(r['per_query_flops'])} | {be_text} |")
    if inputs.stage_seconds:
        out += ["", "Measured wall time per stage: " + ", ".join(f"{k} {v:.1f} s" for k, v in inputs.stage_seconds.items()) + "."]
    out += roofline_lines(roofline_rows(inputs, roofline.cached_flops_per_s))
    return "\n".join(out).rstrip() + "\n"


def _claims_lines(claims: list[dict]) -> list[str]:
    """The claims table (`claims.decide` rows): the paper's findings, then the pipeline's controls."""
    lines = ["## Claims", "",
             ("Each claim compares two conditions on the same items (McNemar's exact test; the 95% interval is "
              "the one it implies), or a condition's accuracy with chance or a level (exact Clopper-Pearson "
              "interval), per world. Verdict: reproduced = the interval lies on the expected side (for A > B: "
              "above 0); contradicted = wholly on the other side; inconclusive = neither (for A ≥ B, agreement "
              "within the noise is inconclusive too); not run = the run lacks what the claim needs."), ""]
    for title, check in (("The paper's findings", False), ("Controls", True)):
        lines += [f"### {title}", "", "| finding | expected | world: splits | n | this run | 95% interval | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for r in (r for r in claims if r["check"] == check):
            if r["world"] is None:
                lines.append(f"| {r['finding']} | {r['paper']} | — | — | — | — | {r['verdict']}: {r['note']} |")
                continue
            if r["b"] is None:
                measured, interval = f"{r['a']} {r['a_acc']:.2f}", f"[{r['lo']:.2f}, {r['hi']:.2f}]"
            else:
                measured = f"{r['a']} {r['a_acc']:.2f} − {r['b']} {r['b_acc']:.2f} = {r['diff']:+.2f}"
                interval = f"[{r['lo']:+.2f}, {r['hi']:+.2f}]"
            lines.append(f"| {r['finding']} | {r['paper']} | {r['world']}: {', '.join(r['splits'])} | {r['n']} | "
                         f"{measured} | {interval} | {r['verdict']} |")
        lines.append("")
    return lines


def _audit_lines(audit: dict) -> list[str]:
    """audit.json (pipeline.augment.audit.build_audit) as a table: one row per world and strategy."""
    def pct(x):
        return "—" if x is None else f"{100 * x:.0f}%"

    lines = ["Every augmented sentence checked against the world's facts: precision = entailed / sentences; "
             "coverage = share of test items whose needed fact some sentence states.", "",
             "| world | strategy | sentences | entailed | contradicted | unverifiable | precision | contradiction rate | coverage | reversal coverage |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    skipped = []
    for world, strategy, s in audit_entries(audit):
        if strategy is None:
            skipped.append(f"{world} ({s})")
        else:
            lines.append(
                f"| {world} | {strategy} | {s['sentences']} | {s['entailed']} | {s['contradicted']} | {s['unverifiable']} | "
                f"{pct(s['precision'])} | {pct(s['contradiction_rate'])} | {pct(s['coverage'])} | {pct(s['reversal_coverage'])} |")
    if skipped:
        lines += ["", "Not audited: " + "; ".join(skipped) + "."]
    return lines + [""]
