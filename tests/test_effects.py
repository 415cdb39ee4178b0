"""The effects experiments at `tiny` scale: their stated facts hold, measured."""

import pytest

from jaxmirror.experiments import effects


@pytest.fixture(scope="module")
def outdir(tmp_path_factory):
    return tmp_path_factory.mktemp("effects")


def test_range_shrinking_experiment(outdir):
    results = effects.run("tiny", "range")
    for key, r in results["schedules"].items():
        assert r["status"] == 0, key
        assert r["width_error"] < 1e-8, key  # width = s0 e^{2a_t}/2 along the flow
        assert r["inside"], key
    shrunk = results["schedules"]["constant"]["width"][-1] / results["width0"]
    assert shrunk < 0.2
    text, figures = effects.report(results, outdir)
    assert "Range shrinking" in text and all(p.exists() for p in figures)


def test_positional_experiment_states_measured_equivalences(outdir):
    results = effects.run("tiny", "positional")
    # Switch-off = no weight decay at scale s e^a with the centre moved to x0 e^{2a}.
    assert results["moved_centre_gap"] < 1e-12
    # At x0 = 0 switch-off is exactly a smaller initial scale.
    assert results["zero_gap"] < 1e-12
    assert results["flow_gap"] < 1e-6 and results["flow_converged"]
    errors = results["errors"]
    moved, unmoved = errors["switch-off"], errors["none, scale s e^a, centre x0"]
    assert abs(moved - unmoved).max() > 0.1  # the centre matters from x0 != 0
    text, figures = effects.report(results, outdir)
    assert "Positional bias" in text and all(p.exists() for p in figures)


def test_deep_experiment(outdir):
    results = effects.run("tiny", "deep")
    assert all(gap < 1e-6 for gap in results["flow_gaps"].values())
    for depth, errors in results["errors"].items():
        # weight decay (a = -2) recovers better than none (a = 0) on average
        assert errors[:, -1].mean() < errors[:, 0].mean(), depth
    text, figures = effects.report(results, outdir)
    assert "Deeper pairs" in text and all(p.exists() for p in figures)
