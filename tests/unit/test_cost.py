import pytest

from pipeline.report.cost import CostInputs, break_even_queries, cost_rows, format_flops


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
