import pytest

from pipeline.report.cost import (
    CostInputs,
    break_even_queries,
    cost_rows,
    format_flops,
    roofline_lines,
    roofline_rows,
    stage_work,
)


def test_hand_computed_case():
    inputs = CostInputs(
        params=1_000_000,
        train_tokens={"ft": 1000, "ft+local": 1500},
        augment_tokens={"local": 500},
        query_tokens={"base": 100, "icl": 2000, "ft": 100, "ft+local": 100},
    )
    rows = {r["condition"]: r for r in cost_rows(inputs, ["base", "icl", "ft", "ft+local"])}
    assert rows["ft"]["train_flops"] == 6e9            # 6 x 1e6 params x 1000 tokens
    assert rows["ft+local"]["train_flops"] == 9e9      # 6 x 1e6 x 1500
    assert rows["ft+local"]["augment_flops"] == 1e9    # 2 x 1e6 x 500
    assert rows["ft+local"]["upfront_flops"] == 10e9
    assert rows["icl"]["per_query_flops"] == 4e9       # 2 x 1e6 x 2000
    assert rows["ft"]["per_query_flops"] == 2e8
    # ICL has no up-front cost: FT pays 6e9 once and saves 3.8e9 a query -> 1.578... queries
    assert rows["ft"]["break_even_vs_icl"] == pytest.approx(6e9 / 3.8e9)
    assert rows["ft+local"]["break_even_vs_icl"] == pytest.approx(10e9 / 3.8e9)
    assert rows["base"]["break_even_vs_icl"] is None and rows["icl"]["break_even_vs_icl"] is None


def test_break_even_edge_cases():
    assert break_even_queries(0, 1, 5, 2) == 0.0          # cheaper on both counts
    assert break_even_queries(5, 2, 0, 2) is None         # never catches up
    assert break_even_queries(10, 1, 0, 3) == 5.0


def test_format_flops():
    assert format_flops(0) == "0"
    assert format_flops(2.5e12) == "2.5 TFLOP"
    assert format_flops(3e6) == "3 MFLOP"


def _measured_inputs():
    return CostInputs(
        params=1_000_000,
        stage_seconds={"augment": 10.0},
        augment_tokens={"local": 4000, "oracle": 0},
        train_runs={"ft": {"tokens": 1000, "train_seconds": 2.0, "bf16": True},
                    "ft+local": {"skipped": True}},  # a reused fit: nothing measured
        scoring={"base": {"tokens": 500, "scoring_seconds": 1.0}, "icl": {"tokens": 500, "scoring_seconds": 4.0}},
        icl_prefix_tokens=1500,
    )


def test_stage_work_uses_the_cost_model_over_measured_time():
    work = {w["stage"]: w for w in stage_work(_measured_inputs())}
    assert set(work) == {"train ft", "evaluate base", "evaluate icl", "augment (stage wall time)"}
    assert work["train ft"] == {"stage": "train ft", "flops": 6e9, "seconds": 2.0, "dtype": "bf16"}
    assert work["evaluate base"]["flops"] == 1e9 and work["evaluate base"]["dtype"] == "fp32"
    assert work["evaluate icl"]["flops"] == 2.0 * 1e6 * (500 + 1500)  # the prefix counted once
    assert work["augment (stage wall time)"]["flops"] == 8e9


def test_lora_training_counts_no_gradients_of_the_frozen_weights():
    inputs = _measured_inputs()
    inputs.lora = True
    inputs.train_tokens = {"ft": 1000}
    assert {w["stage"]: w for w in stage_work(inputs)}["train ft"]["flops"] == 4e9  # 4 x 1e6 x 1000
    assert {r["condition"]: r for r in cost_rows(inputs, ["ft"])}["ft"]["train_flops"] == 4e9


def test_roofline_rows_and_lines_with_and_without_a_roof():
    rows = {r["stage"]: r for r in roofline_rows(_measured_inputs(), {"bf16": 6e9, "fp32": None}.get)}
    assert rows["train ft"]["achieved_flops_per_s"] == 3e9
    assert rows["train ft"]["fraction_of_roof"] == pytest.approx(0.5)
    assert rows["evaluate base"]["fraction_of_roof"] is None
    text = "\n".join(roofline_lines(list(rows.values())))
    assert "| train ft | bf16 | 6 GFLOP | 2.0 | 3 GFLOP/s | 6 GFLOP/s | 50% |" in text
    assert "python -m pipeline.roofline" in text  # fp32 was never measured: say how
    measured = roofline_lines(roofline_rows(_measured_inputs(), lambda dtype: 6e9))
    assert not any("not measured" in line for line in measured)
    assert roofline_lines([]) == []
    tiny = roofline_lines(roofline_rows(_measured_inputs(), lambda dtype: 3e12))
    assert any(line.endswith("| 0.10% |") for line in tiny)  # a small fraction keeps its digits


def test_another_generators_parameters_price_the_augmentations_and_its_own_icl():
    inputs = CostInputs(
        params=1_000_000, generator_params=10_000_000, augment_dtype="bfloat16",
        train_tokens={"ft+local": 1000}, augment_tokens={"local": 500},
        query_tokens={"icl": 2000, "icl-generator": 2500, "ft+local": 100},
        scoring={"icl": {"tokens": 500, "scoring_seconds": 1.0}, "icl-generator": {"tokens": 600, "scoring_seconds": 5.0}},
        stage_seconds={"augment": 10.0}, icl_prefix_tokens=1500, generator_icl_prefix_tokens=1900,
    )
    rows = {r["condition"]: r for r in cost_rows(inputs, ["icl", "icl-generator", "ft+local"])}
    assert rows["ft+local"]["augment_flops"] == 1e10                 # 2 x 1e7 generator params x 500
    assert rows["ft+local"]["train_flops"] == 6e9                    # the model under study trains
    assert rows["icl-generator"]["per_query_flops"] == 5e10          # 2 x 1e7 x 2500
    assert rows["icl"]["per_query_flops"] == 4e9
    assert rows["icl-generator"]["break_even_vs_icl"] is None
    work = {w["stage"]: w for w in stage_work(inputs)}
    assert work["evaluate icl-generator"] == {"stage": "evaluate icl-generator", "flops": 2e7 * (600 + 1900),
                                              "seconds": 5.0, "dtype": "bf16"}
    assert work["evaluate icl"]["flops"] == 2e6 * (500 + 1500) and work["evaluate icl"]["dtype"] == "fp32"
    assert work["augment (stage wall time)"]["flops"] == 1e10
