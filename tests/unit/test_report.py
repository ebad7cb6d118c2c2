"""The report stage on a hand-made run folder: tables, plots, audit and cost sections."""

import json

from pipeline.config import validate_config
from pipeline.evaluate.results import build_results
from pipeline.records import write_json
from pipeline.report import stage as report_stage
from pipeline.runs import Run


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


def test_report_writes_tables_plots_and_costs(tmp_path, tiny_model_dir):
    cfg = validate_config({"name": "r", "output_dir": str(tmp_path), "conditions": ["base", "icl", "ft"],
                           "model": {"ref": "tiny-random"}})
    run = Run.of(cfg)
    items, scores = _items_and_scores()
    timing = {c: {"seconds": 1.0, "sequences": 8, "tokens": 40} for c in scores}
    results = build_results(items, scores, extra={"icl": {"reversals": {"prefix_tokens": 1000}}, "timing": timing})
    write_json(run.path("results.json"), results)
    run.mark_done("evaluate", {"items": 4}, 2.0)
    (run.path("models", "ft")).mkdir(parents=True)
    run.path("models", "ft", "train_config.json").write_text(json.dumps({"result": {"tokens": 500}}))

    summary = report_stage.run(cfg, run)

    text = run.path("report.md").read_text()
    assert "| reversal | 4 | 0.50 | 0.50 ± 0.29 | 1.00 ± 0.00 | 0.25 ± 0.25 |" in text
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
    write_json(run.path("results.json"), build_results(items, {"base": scores["base"]}))
    run.mark_done("evaluate", {"items": 4}, 2.0)
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
