"""The report stage on a hand-made run folder: claims, tables, plots, audit and cost sections."""

import json
from pathlib import Path

from pipeline.config import validate_config
from pipeline.evaluate.results import build_results
from pipeline.records import Item, Score, write_json, write_records
from pipeline.report import stage as report_stage
from pipeline.runs import Run

ROOT = Path(__file__).resolve().parents[2]


def _items_and_scores():
    items, scores = [], {"base": [], "icl": [], "ft": []}
    for i in range(4):
        items.append({"item_id": f"r{i}", "world": "reversals", "split": "reversal", "subtask": "cmp",
                      "prompt": "q", "choices": [" a", " b"], "answer_index": i % 2, "support_fact_ids": []})
    for item in items:
        right = item["answer_index"]
        for cond, correct in (("base", item["item_id"] in ("r0", "r1")), ("icl", True), ("ft", item["item_id"] == "r0")):
            lp = [-2.0, -2.0]
            lp[right if correct else 1 - right] = -1.0
            scores[cond].append({"item_id": item["item_id"], "choice_logprobs": lp, "choice_num_tokens": [1, 1], "choice_num_chars": [2, 2]})
    return items, scores


def write_evaluated(run, items, scores, **extra):
    """What the data and evaluate stages leave: items, scores per condition, results.json, a manifest."""
    write_records(run.path("data", "items.parquet"), Item, items)
    for condition, rows in scores.items():
        write_records(run.path("scores", f"{condition}.parquet"), Score, [{**r, "condition": condition} for r in rows])
    write_json(run.path("results.json"), build_results(items, scores, extra=extra))
    run.mark_done("evaluate", {"items": len(items)}, 2.0)


def test_report_writes_tables_plots_and_costs(tmp_path, tiny_model_dir):
    cfg = validate_config({"name": "r", "output_dir": str(tmp_path), "conditions": ["base", "icl", "ft"],
                           "model": {"ref": "tiny-random"}})
    run = Run.of(cfg)
    items, scores = _items_and_scores()
    timing = {c: {"seconds": 1.0, "sequences": 8, "tokens": 40} for c in scores}
    write_evaluated(run, items, scores, icl={"reversals": {"prefix_tokens": 1000}}, timing=timing)
    (run.path("models", "ft")).mkdir(parents=True)
    run.path("models", "ft", "train_config.json").write_text(json.dumps({"result": {"tokens": 500}}))

    summary = report_stage.run(cfg, run)

    text = run.path("report.md").read_text()
    assert "| reversal | 4 | 0.50 | 0.50 ± 0.29 | 1.00 ± 0.00 | 0.25 ± 0.25 |" in text
    claims = text[text.index("## Claims"):text.index("## Accuracy")]  # above the accuracy tables
    assert claims.count("| finding | expected | world: splits | n | this run | 95% interval | verdict |") == 2
    # icl right on 3 items ft gets wrong, never the reverse: McNemar p = 0.25, interval
    # 3/4 * (2 * 0.025^(1/3) - 1) = -0.31 to 0.75
    assert "| ICL > FT on reversals | ICL > FT | reversals: reversal | 4 | icl 1.00 − ft 0.25 = +0.75 | [-0.31, +0.75] | inconclusive |" in claims
    assert "| ICL > FT on syllogisms | ICL > FT | — | — | — | — | not run: no syllogism split in this run |" in claims
    assert "not run: no ft+local+global or ft+local condition in this run |" in claims
    assert "| base near chance | base within 0.10 of chance | reversals: reversal | 4 | base 0.50 − chance 0.50 = +0.00 | [-0.43, +0.43] | inconclusive |" in claims
    assert summary["claims"] == {"inconclusive": 2, "not run": 10}
    assert (tmp_path / "r" / "plots" / "reversals.png").stat().st_size > 10_000
    assert summary["plots"] == ["plots/reversals.png"]
    cost = {r["condition"]: r for r in summary["cost"]}
    params = sum(p.numel() for p in __import__("pipeline.models", fromlist=["x"]).load_model(str(tiny_model_dir)).parameters())
    assert cost["ft"]["train_flops"] == 6 * params * 500
    assert cost["icl"]["query_tokens"] == 1000 + 10      # corpus prefix + 40 tokens / 4 items
    assert cost["ft"]["break_even_vs_icl"] == (6 * params * 500) / (2 * params * 1000)
    assert "No augmentation ran" in text and "Measured wall time per stage: evaluate 2.0 s" in text


def test_audit_section_reads_the_augment_stages_audit(tmp_path, tiny_model_dir):
    cfg = validate_config({"name": "a", "output_dir": str(tmp_path), "conditions": ["base"],
                           "model": {"ref": "tiny-random"}})
    run = Run.of(cfg)
    items, scores = _items_and_scores()
    write_evaluated(run, items, {"base": scores["base"]})
    strategy = {"sentences": 10, "entailed": 7, "contradicted": 1, "unverifiable": 2, "entailed_new": 3,
                "precision": 0.7, "contradiction_rate": 0.1, "coverage": 0.25, "reversal_coverage": None}
    write_json(run.path("augment", "audit.json"), {
        "worlds": {"reversals": {"auditable": True, "strategies": {"local": strategy}},
                   "corpus": {"auditable": False, "reason": "no ground-truth facts"}},
        "generation": {}})

    report_stage.run(cfg, run)

    text = run.path("report.md").read_text()
    assert "| reversals | local | 10 | 7 | 1 | 2 | 70% | 10% | 25% | — |" in text
    assert "Not audited: corpus (no ground-truth facts)." in text


def test_claims_table_for_the_smoke_configs_worlds(tmp_path, tiny_model_dir):
    """The smoke config's worlds and conditions, with made-up outcomes whose verdicts are known:
    icl, ft+local+global and ft+oracle right on every item; ft, ft+local and ft+global right on
    rephrase only; base right on every other item."""
    from pipeline.config import load_config
    from pipeline.data.stage import build_worlds

    cfg = load_config(ROOT / "configs" / "smoke.yaml", [f"output_dir={tmp_path}", "report.plots=false"])
    run = Run.of(cfg)
    _, items, _ = build_worlds(cfg)
    right = {"icl": lambda it, k: True, "ft+local+global": lambda it, k: True, "ft+oracle": lambda it, k: True,
             "base": lambda it, k: k % 2 == 0, **{c: (lambda it, k: it["split"] == "rephrase") for c in ("ft", "ft+local", "ft+global")}}
    scores = {}
    for condition in cfg.conditions:
        scores[condition] = []
        for k, it in enumerate(items):
            lp = [-2.0] * len(it["choices"])
            lp[it["answer_index"] if right[condition](it, k) else (it["answer_index"] + 1) % len(lp)] = -1.0
            scores[condition].append({"item_id": it["item_id"], "choice_logprobs": lp,
                                      "choice_num_tokens": [1] * len(lp), "choice_num_chars": [2] * len(lp)})
    write_evaluated(run, items, scores, timing={})

    summary = report_stage.run(cfg, run)

    text = run.path("report.md").read_text()
    claims = text[text.index("## Claims"):text.index("## Accuracy")]
    rows = [line for line in claims.splitlines() if line.startswith("| ") and not line.startswith("| finding")]
    by = {}
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        by.setdefault(cells[0], []).append((cells[2], cells[3], cells[-1]))
    # 6 items per split (tests/integration/test_multinode.py pins them); 6 discordant of 6:
    # the interval's lower end is 2 * 0.025^(1/6) - 1 = +0.08
    assert by["ICL > FT on reversals"] == [("families: reversal", "6", "reproduced"), ("reversals: reversal", "6", "reproduced")]
    assert "| icl 1.00 − ft 0.00 = +1.00 | [+0.08, +1.00] | reproduced |" in claims
    assert by["ICL > FT on syllogisms"] == [("syllogisms: syllogism", "6", "reproduced")]
    assert by["augmented FT vs ICL"] == [(f"{w}: {s}", n, "inconclusive") for w, s, n in (
        ("families", "composition, reversal", "12"), ("reversals", "rephrase, reversal", "12"), ("syllogisms", "syllogism", "6"))]
    assert [v for _, _, v in by["local+global vs local alone"]] == ["reproduced"] * 3
    assert by["sentence splitting helps FT"][0][2].startswith("not run: no condition varies train.sentence_split")
    assert [v for _, _, v in by["base near chance"]] == ["inconclusive"] * 3  # n = 6-12: too few to say
    assert by["FT learns its training data"] == [("reversals: rephrase", "6", "inconclusive")]  # 6 / 6, lower end 0.54
    # chosen on about half of each split's 6 items: all right is above chance only at chance ~0.2
    assert [w for w, _, _ in by["ICL > FT where ICL beats chance"]] == ["syllogisms: syllogism"]
    assert sum(summary["claims"].values()) == len(rows)


def test_roofline_table_shows_each_fit_once_against_the_cached_roof(tmp_path, tiny_model_dir, monkeypatch):
    import os

    from pipeline import roofline
    from pipeline.models import load_model

    cache = tmp_path / "roofline.json"
    monkeypatch.setattr(roofline, "cache_path", lambda: cache)
    threads = os.cpu_count() or 1
    key = roofline.machine_key("fp32", threads)
    cache.write_text(json.dumps({key: {"dtype": "fp32", "threads": threads, "flops_per_s": 1e12, "size": 64, "key": key}}))
    cfg = validate_config({"name": "r", "output_dir": str(tmp_path / "runs"), "conditions": ["base", "icl", "ft"],
                           "model": {"ref": "tiny-random"}})
    run = Run.of(cfg)
    items, scores = _items_and_scores()
    write_evaluated(run, items, scores, timing={c: {"seconds": 1.0, "sequences": 8, "tokens": 40} for c in scores})
    fit = {"tokens": 500, "train_seconds": 2.0, "bf16": False}
    run.mark_done("train", {"ft": fit, "ft+local": {**fit, "same_fit_as": "ft"}}, 3.0)

    report_stage.run(cfg, run)

    text = run.path("report.md").read_text()
    params = sum(p.numel() for p in load_model(str(tiny_model_dir)).parameters())
    achieved = 6 * params * 500 / 2.0
    row = next(line for line in text.splitlines() if line.startswith("| train ft |"))
    assert row.endswith(f"| 1 TFLOP/s | {achieved / 1e12:.2%} |") and "| fp32 |" in row
    assert "| train ft+local |" not in text  # the shared fit ran once
    assert "Roof not measured" not in text


def test_a_run_with_another_generator_reports_its_icl_and_prices_it_at_its_size(tmp_path, tiny_model_dir):
    from pipeline import models

    generator = models.build_tiny_model(tmp_path / "generator", seed=1)
    cfg = validate_config({"name": "g", "output_dir": str(tmp_path), "conditions": ["icl", "icl-generator", "ft+local"],
                           "model": {"ref": "tiny-random"}, "augment": {"generator": {"ref": str(generator)}}})
    run = Run.of(cfg)
    items, scores = _items_and_scores()
    scores = {"icl": scores["icl"], "icl-generator": scores["base"], "ft+local": scores["ft"]}
    timing = {c: {"scoring_seconds": 1.0, "sequences": 8, "tokens": 40} for c in scores}
    write_evaluated(run, items, scores, icl={"reversals": {"prefix_tokens": 1000}},
                    icl_generator={"reversals": {"prefix_tokens": 1200}}, timing=timing)

    summary = report_stage.run(cfg, run)

    text = run.path("report.md").read_text()
    assert f"augmentations written by `{generator}` (its own ICL: the icl-generator column)" in text
    assert "| split | n | chance | icl | icl-generator | ft+local |" in text
    assert "| reversal | 4 | 0.50 | 1.00 ± 0.00 | 0.50 ± 0.29 | 0.25 ± 0.25 |" in text
    cost = {r["condition"]: r for r in summary["cost"]}
    assert cost["icl-generator"]["query_tokens"] == 1200 + 10 and cost["icl"]["query_tokens"] == 1000 + 10
    assert "evaluate icl-generator" in text  # its own row in the roofline table
