"""The run-time estimate: stages without work are left out, and time falls with the roof."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.estimate import DECODE_STEP_S, FIXED_S, PARAM_STEP_S, TRAIN_MATMUL_SHARE, Work, rate, seconds


def test_each_stage_is_its_fixed_cost_plus_its_flops_at_its_share_of_the_roof():
    work = Work(params=1_000_000, generate_batches=[(100, 10, 4)], fits={"ft": (5, 2_000), "ft+oracle": (8, 3_000)},
                scored_tokens=10_000)
    roofs = {"fp32": 1e9, "bf16": 4e9}
    est = seconds(work, roofs, train_dtype="bf16", score_dtype="fp32", gen_dtype="fp32")
    assert est["augment"] == pytest.approx(FIXED_S["augment"] + 2e6 * (100 + 10 * 4) / rate("augment", "fp32", roofs)
                                           + 10 * DECODE_STEP_S)  # one call of 10 decoding steps
    per_weight = 13 * 1_000_000 * PARAM_STEP_S["bf16"]  # 13 optimizer steps over a million weights
    assert est["train"] == pytest.approx(2 * FIXED_S["fit"] + per_weight + 6e6 * 5_000 / (4e9 * TRAIN_MATMUL_SHARE))
    assert est["evaluate"] == pytest.approx(FIXED_S["evaluate"] + 2e6 * 10_000 / rate("evaluate", "fp32", roofs))
    faster = seconds(work, {"fp32": 2e9, "bf16": 8e9}, "bf16", "fp32", "fp32")
    for stage in est:  # twice the roof: the matrix products' part halves; the fixed, per-weight, per-step parts stay
        fixed = {"train": 2 * FIXED_S["fit"] + per_weight, "augment": FIXED_S["augment"] + 10 * DECODE_STEP_S,
                 "evaluate": FIXED_S["evaluate"]}[stage]
        assert faster[stage] - fixed == pytest.approx((est[stage] - fixed) / 2)


def test_a_lora_fit_costs_its_matrix_products_only_at_four_flops_per_weight_and_token():
    full = Work(params=1_000_000, fits={"ft": (10, 4_000)})
    lora = Work(params=1_000_000, fits={"ft": (10, 4_000)}, lora=True)
    roofs = {"fp32": 1e9}
    assert seconds(lora, roofs, "fp32", "fp32", "fp32")["train"] == pytest.approx(FIXED_S["fit"] + 4e6 * 4_000 / (1e9 * TRAIN_MATMUL_SHARE))
    assert seconds(full, roofs, "fp32", "fp32", "fp32")["train"] == pytest.approx(
        FIXED_S["fit"] + 10 * 1_000_000 * PARAM_STEP_S["fp32"] + 6e6 * 4_000 / (1e9 * TRAIN_MATMUL_SHARE))


def test_a_dtype_not_measured_for_a_stage_is_estimated_at_its_fp32_rate():
    roofs = {"fp32": 1e9, "bf16": 8e9}
    assert rate("evaluate", "bf16", roofs) == rate("evaluate", "fp32", roofs) < roofs["fp32"]
    assert rate("train", "bf16", roofs) == 8 * rate("train", "fp32", roofs)  # training's products run in its dtype


def test_another_generator_writes_and_scores_at_its_own_size_and_dtype():
    roofs = {"fp32": 1e9, "bf16": 4e9}
    work = Work(params=1_000_000, generator_params=10_000_000, generate_batches=[(100, 10, 4)],
                scored_tokens=10_000, generator_scored_tokens=3_000)
    est = seconds(work, roofs, train_dtype="fp32", score_dtype="fp32", gen_dtype="bf16")
    assert est["augment"] == pytest.approx(FIXED_S["augment"] + 2e7 * (100 + 10 * 4) / rate("augment", "bf16", roofs)
                                           + 10 * DECODE_STEP_S)
    assert est["evaluate"] == pytest.approx(FIXED_S["evaluate"] + 2e6 * 10_000 / rate("evaluate", "fp32", roofs)
                                            + 2e7 * 3_000 / rate("evaluate", "bf16", roofs))


def test_a_stage_without_work_is_not_estimated():
    assert seconds(Work(params=10, scored_tokens=5), {"fp32": 1e9}, "fp32", "fp32", "fp32").keys() == {"evaluate"}
    assert seconds(Work(params=10), {"fp32": 1e9}, "fp32", "fp32", "fp32") == {}


def test_the_plan_has_the_steps_the_train_stage_will_take_on_the_augmented_data(tmp_path):
    from pipeline.config import load_config
    from pipeline.estimate import plan_work
    from pipeline.models import context_window, load_tokenizer
    from pipeline.records import Doc, read_records
    from pipeline.runs import Run
    from pipeline.stages import run_stage
    from pipeline.train.stage import prepare

    cfg = load_config(str(Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"),
                      [f"output_dir={tmp_path}", "conditions=[base,icl,ft,ft+oracle]", "train.max_steps=null"])
    run = Run.of(cfg)
    run.save_config(cfg)
    run_stage("data", cfg, run)
    run_stage("augment", cfg, run)  # the oracle only: derived from the facts, no model, no Ray
    work = plan_work(cfg, run)
    docs = read_records(run.path("data", "docs.parquet"), Doc)
    augmented = read_records(run.path("augment", "augmented.parquet"), Doc)
    assert augmented and not work.generate_batches
    tokenizer, window = load_tokenizer(cfg.model), context_window(cfg.model)
    for condition in ("ft", "ft+oracle"):
        p = prepare(condition, cfg, docs, augmented, tokenizer, window)  # what the train stage will fit
        assert work.fits[condition] == (p.steps, sum(len(r["input_ids"]) for r in p.rows)), condition
    assert work.fits["ft+oracle"][0] > work.fits["ft"][0]
    split_tokens = sum(s["tokens"] for w in run.manifest("data")["summary"]["worlds"].values() for s in w["splits"].values())
    assert work.scored_tokens > 4 * split_tokens  # four conditions score every item; icl adds the corpus


def test_an_estimate_that_cannot_be_made_is_a_warning_and_the_run_goes_on(tmp_path, caplog):
    from pipeline.cli import log_estimate
    from pipeline.config import load_config
    from pipeline.runs import Run
    from pipeline.stages import run_stage

    cfg = load_config(str(Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"), [f"output_dir={tmp_path}"])
    run = Run.of(cfg)
    run.save_config(cfg)
    run_stage("data", cfg, run)
    run.path("data", "docs.parquet").unlink()  # what the plan reads
    with caplog.at_level("WARNING", logger="pipeline"):
        log_estimate(cfg, run, ["augment", "train", "evaluate", "report"], force=False)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("no time estimate: ") and "docs.parquet" in warnings[0], warnings


def test_a_resumed_run_leaves_out_the_fits_the_train_stage_will_reuse(tmp_path):
    from pipeline.config import load_config
    from pipeline.estimate import plan_work
    from pipeline.models import context_window, load_tokenizer, local_model_folder
    from pipeline.records import Doc, read_records
    from pipeline.runs import Run
    from pipeline.stages import run_stage
    from pipeline.train.export import finalize
    from pipeline.train.stage import prepare, training_record

    smoke = str(Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml")
    overrides = [f"output_dir={tmp_path}", "conditions=[base,ft,ft+oracle]", "train.max_steps=null"]
    cfg = load_config(smoke, overrides)
    run = Run.of(cfg)
    run.save_config(cfg)
    run_stage("data", cfg, run)
    run_stage("augment", cfg, run)
    docs = read_records(run.path("data", "docs.parquet"), Doc)
    augmented = read_records(run.path("augment", "augmented.parquet"), Doc)
    tokenizer = load_tokenizer(cfg.model)
    ft = prepare("ft", cfg, docs, augmented, tokenizer, context_window(cfg.model))
    exported = tmp_path / "exported"
    exported.mkdir()
    (exported / "model.safetensors").write_bytes(b"weights")
    # a complete model folder for ft, with the record the train stage writes for this config and data
    finalize(exported, run.path("models", "ft"), tokenizer, training_record(cfg, ft, local_model_folder(cfg.model)))

    resumed = plan_work(cfg, run, reuse=True)
    assert set(resumed.fits) == {"ft+oracle"}
    assert resumed.fits["ft+oracle"] == plan_work(cfg, run).fits["ft+oracle"]  # the real oracle docs: the same plan
    assert set(plan_work(cfg, run).fits) == {"ft", "ft+oracle"}  # forced, or augment reruns: every fit counts
    retrained = load_config(smoke, [*overrides, "train.lr=0.001"])  # ft's folder was trained with another lr
    assert set(plan_work(retrained, run, reuse=True).fits) == {"ft", "ft+oracle"}
