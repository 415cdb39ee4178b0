"""The matrix-sensing generalization experiment runs (tiny scale) and its report's
verdict follows from its own intervals."""

import numpy as np

from jaxmirror.experiments import matrix_generalization
from jaxmirror.experiments._statistics import paired_interval, verdict


def test_tiny_run_and_report(tmp_path):
    results = matrix_generalization.run("tiny")
    schedules = results["schedules"]
    assert set(schedules) == {"never", "always", "switch-off"}
    for r in schedules.values():
        assert r["held_out"].shape == (results["cfg"]["seeds"],)
        assert np.all(np.isfinite(r["held_out"])) and np.all(r["held_out"] >= 0)
    text, figures = matrix_generalization.report(results, tmp_path)
    expected = verdict(
        paired_interval(schedules["switch-off"]["held_out"], schedules["never"]["held_out"]),
        paired_interval(schedules["switch-off"]["held_out"], schedules["always"]["held_out"]),
    )
    assert results["verdict"] == expected and expected in text
    assert all(path.exists() for path in figures)
