"""The intervals of the claims table, against independent references: scipy's
paired t-test and the Wilson interval found as the root set of its defining
inequality; and the generalization experiment's seeds and verdicts at tiny size."""

import numpy as np
import pytest
import scipy.optimize
import scipy.stats

from jaxmirror.experiments import _statistics, generalization


def test_paired_interval_is_scipys_paired_t_interval():
    rng = np.random.default_rng(0)
    first, second = rng.normal(1.0, 1.0, 32), rng.normal(0.6, 1.0, 32)
    interval = _statistics.paired_interval(first, second)
    reference = scipy.stats.ttest_rel(first, second).confidence_interval(0.95)
    np.testing.assert_allclose(
        [interval.low, interval.high], [reference.low, reference.high], rtol=1e-12
    )
    assert interval.estimate == pytest.approx(np.mean(first - second))


@pytest.mark.parametrize("successes, trials", [(0, 16), (3, 16), (16, 16), (20, 32)])
def test_wilson_interval_solves_its_defining_inequality(successes, trials):
    """Wilson's interval: the p with |p_hat - p| <= z sqrt(p (1 - p) / n)."""
    z = scipy.stats.norm.ppf(0.975)
    p_hat = successes / trials

    def edge(p):
        return abs(p_hat - p) - z * np.sqrt(p * (1 - p) / trials)

    # The roots on either side of p_hat (edge < 0 just beside it, > 0 far from it);
    # at 0/n and n/n one root is p_hat itself and the other bounds the interval.
    tiny = 1e-12
    low = 0.0 if successes == 0 else scipy.optimize.brentq(edge, tiny, p_hat - tiny)
    high = (
        1.0
        if successes == trials
        else scipy.optimize.brentq(edge, p_hat + tiny, 1 - tiny)
    )
    interval = _statistics.wilson_interval(successes, trials)
    np.testing.assert_allclose([interval.low, interval.high], [low, high], atol=1e-9)
    assert interval.high - interval.low > 0.05  # never +- 0.00 at 0/n or n/n


def test_verdicts_read_the_intervals():
    below = _statistics.Interval(-1.0, -2.0, -0.5)
    above = _statistics.Interval(1.0, 0.5, 2.0)
    straddles = _statistics.Interval(0.1, -1.0, 1.0)
    assert _statistics.verdict(below, below) == "reproduces"
    assert _statistics.verdict(below, above) == "does not reproduce"
    assert _statistics.verdict(below, straddles) == "inconclusive"


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="successes <= trials"):
        _statistics.wilson_interval(5, 4)
    with pytest.raises(ValueError, match="one value per seed"):
        _statistics.paired_interval([1.0], [2.0])


def test_generalization_tunes_and_reports_on_disjoint_seeds(tmp_path):
    results = generalization.run("tiny")
    assert not set(results["tuning"]) & set(results["reported"])
    text, figures = generalization.report(results, tmp_path)
    assert all(path.stat().st_size > 10_000 for path in figures)
    for name in generalization.PAIRS:
        assert set(results[name]) == {"limit", "T = 50"}
        for horizon, r in results[name].items():
            assert set(r) == {"never", "always", "switch-off"}
            shapes = {v["held_out"].shape for v in r.values()}
            assert shapes == {(len(results["reported"]),)}
            assert results["verdicts"][name, horizon] in (
                "reproduces",
                "does not reproduce",
                "inconclusive",
            )
        # the never schedule has no setting: the same run at both horizons, up to
        # the flow's distance from its limit at T
        limit, flow = (results[name][h]["never"]["held_out"] for h in results[name])
        np.testing.assert_allclose(limit, flow, rtol=0.2)
    assert "switch-off − never" in text
