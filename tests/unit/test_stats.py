"""pipeline.stats: exact intervals and the paired comparison of two conditions on the same items."""

import pytest

from pipeline.stats import binomial_interval, mcnemar_p, paired_difference


def outcomes(values, prefix="i"):
    return {f"{prefix}{k}": v for k, v in enumerate(values)}


def test_clopper_pearson_matches_closed_forms_and_the_textbook_value():
    assert binomial_interval(5, 10) == pytest.approx((0.187086, 0.812914), abs=1e-6)
    assert binomial_interval(30, 40) == pytest.approx((0.588038, 0.873085), abs=1e-6)
    lo, hi = binomial_interval(10, 10)  # all right: lower bound solves p^10 = 0.025
    assert (lo, hi) == (pytest.approx(0.025 ** (1 / 10), abs=1e-9), 1.0)
    lo, hi = binomial_interval(0, 10)
    assert (lo, hi) == (0.0, pytest.approx(1 - 0.025 ** (1 / 10), abs=1e-9))


def test_clopper_pearson_at_large_n_stays_finite_and_symmetric():
    lo, hi = binomial_interval(50_000, 100_000)
    assert lo == pytest.approx(0.496896, abs=1e-6) and hi == pytest.approx(1 - lo, abs=1e-12)
    lo1, hi1 = binomial_interval(1, 100_000)
    lo2, hi2 = binomial_interval(99_999, 100_000)
    assert (lo1, hi1) == pytest.approx((1 - hi2, 1 - lo2), abs=1e-12)
    assert lo1 == pytest.approx(2.53178e-7, rel=1e-4)


def test_binomial_interval_refuses_impossible_counts():
    with pytest.raises(ValueError, match="3 successes of 2"):
        binomial_interval(3, 2)


def test_mcnemar_exact_p_values_by_hand():
    assert mcnemar_p(8, 2) == pytest.approx(2 * (1 + 10 + 45) / 1024)  # 0.109375
    assert mcnemar_p(2, 8) == mcnemar_p(8, 2)
    assert mcnemar_p(5, 0) == 2 / 32
    assert mcnemar_p(6, 0) == 2 / 64
    assert mcnemar_p(0, 0) == mcnemar_p(3, 3) == 1.0


def test_identical_outcomes_differ_by_exactly_zero():
    a = outcomes([1, 0, 1, 1, 0])
    d = paired_difference(a, dict(a))
    assert (d.diff, d.lo, d.hi, d.p) == (0.0, 0.0, 0.0, 1.0)


def test_always_better_gives_an_interval_strictly_above_zero():
    d = paired_difference(outcomes([1] * 10), outcomes([0] * 10))
    assert d.diff == 1.0 and d.hi == pytest.approx(1.0)
    assert d.lo == pytest.approx(2 * 0.025 ** (1 / 10) - 1, abs=1e-9) and d.lo > 0  # 0.383
    assert d.p == 2 / 1024


def test_the_interval_agrees_with_the_exact_test_and_is_scaled_by_the_discordant_share():
    # 100 items: A alone right on 8, B alone right on 2, 90 agree.
    a = outcomes([1] * 8 + [0] * 2 + [1] * 45 + [0] * 45)
    b = outcomes([0] * 8 + [1] * 2 + [1] * 45 + [0] * 45)
    d = paired_difference(a, b)
    assert (d.diff, d.n, d.a_only, d.b_only) == (pytest.approx(0.06), 100, 8, 2)
    p_lo, p_hi = binomial_interval(8, 10)
    assert (d.lo, d.hi) == (pytest.approx(0.1 * (2 * p_lo - 1)), pytest.approx(0.1 * (2 * p_hi - 1)))
    assert d.lo < 0 < d.hi and d.p == pytest.approx(0.109375)  # p > 0.05: the interval includes 0
    # 5 vs 0 of 100: a bootstrap would exclude 0 here; the exact test (p = 0.0625) does not
    d = paired_difference(outcomes([1] * 5 + [0] * 95), outcomes([0] * 100))
    assert d.lo < 0 < d.hi and d.p == 0.0625
    # 6 vs 0: p = 0.03125 and the interval excludes 0
    d = paired_difference(outcomes([1] * 6 + [0] * 94), outcomes([0] * 100))
    assert d.lo > 0 and d.p < 0.05
    d = paired_difference(outcomes([0] * 100), outcomes([1] * 6 + [0] * 94))
    assert d.hi < 0 and d.diff == pytest.approx(-0.06)


def test_pairing_is_by_item_id_not_by_order():
    a = {"x": 1, "y": 0, "z": 0}
    b = {"z": 0, "y": 1, "x": 1}
    d = paired_difference(a, b)
    assert (d.a_only, d.b_only) == (0, 1)


def test_different_items_are_an_error_naming_them():
    with pytest.raises(ValueError, match=r"1 only in A \['i2'\], 1 only in B \['j0'\]"):
        paired_difference(outcomes([1, 0, 1]), {"i0": 1, "i1": 0, "j0": 1})
    with pytest.raises(ValueError, match="no items"):
        paired_difference({}, {})


def test_outcomes_must_be_zero_or_one():
    with pytest.raises(ValueError, match=r"item 'i1': outcome 0.5 is not 0 or 1"):
        paired_difference(outcomes([1, 0.5]), outcomes([1, 0]))
