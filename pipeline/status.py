"""`python -m pipeline status CONFIG`: each stage done / stale (why) / missing, as a table.

Read-only: it saves nothing and starts no Ray. Exit code 0 only when every stage is done and
current for this config.
"""

from __future__ import annotations

import time

from pipeline.config import RunConfig
from pipeline.fingerprint import code_version
from pipeline.runs import Run
from pipeline.stages import STAGES, stage_state


def key_numbers(stage: str, summary: dict) -> str:
    """The few numbers that say what a finished stage made."""
    if stage == "data":
        return f"{summary.get('docs', '?')} docs, {summary.get('items', '?')} items"
    if stage == "augment":
        return f"{summary.get('rows', '?')} rows from {summary.get('prompts', 0)} prompts"
    if stage == "train":
        fits = {c: s for c, s in summary.items() if isinstance(s, dict)}
        return ", ".join(f"{c} {s.get('steps', '?')} steps" for c, s in fits.items()) or "no FT condition"
    if stage == "evaluate":
        acc = summary.get("acc", {})
        means = {c: sum(w.values()) / len(w) for c, w in acc.items() if w}
        return f"{summary.get('items', '?')} items; acc " + ", ".join(f"{c} {a:.2f}" for c, a in means.items())
    if stage == "report":
        return f"{len(summary.get('plots', []))} plots"
    return ""


def status_rows(cfg: RunConfig, run: Run) -> list[dict]:
    """One row per stage: name, state, reasons, seconds, finished (local time), numbers, code."""
    memo: dict = {}
    rows = []
    for name in STAGES:
        state, reasons = stage_state(name, cfg, run, memo)
        row = {"stage": name, "state": state, "reasons": reasons, "seconds": None, "finished": "", "numbers": "", "code": None}
        if state != "missing":
            manifest = run.manifest(name)
            row.update(seconds=manifest.get("seconds"), numbers=key_numbers(name, manifest.get("summary", {})),
                       finished=time.strftime("%Y-%m-%d %H:%M", time.localtime(manifest.get("finished_at", 0))),
                       code=(manifest.get("code") or {}).get("git"))
        rows.append(row)
    return rows


def format_status(rows: list[dict], run: Run) -> str:
    table = [("stage", "state", "finished", "seconds", "numbers")]
    for r in rows:
        table.append((r["stage"], r["state"], r["finished"], "" if r["seconds"] is None else f"{r['seconds']:.1f}", r["numbers"]))
    widths = [max(len(str(t[i])) for t in table) for i in range(5)]
    lines = [f"run {run.dir}"] + ["  ".join(f"{str(v):<{widths[i]}}" for i, v in enumerate(t)).rstrip() for t in table]
    for r in rows:
        for reason in r["reasons"]:
            lines.append(f"  {r['stage']} is stale: {reason}")
    now = code_version().get("git")
    older = sorted({r["code"] for r in rows if r["code"] and now and r["code"] != now})
    if older:  # recorded, not a reason to rerun (see pipeline.fingerprint)
        lines.append(f"  note: some stages ran with other code ({', '.join(c[:12] for c in older)}; now {now[:12]}); "
                     "--force reruns a stage")
    missing = [r["stage"] for r in rows if r["state"] != "done"]
    lines.append("complete and current" if not missing else f"to do: {', '.join(missing)} (python -m pipeline run CONFIG)")
    return "\n".join(lines)
