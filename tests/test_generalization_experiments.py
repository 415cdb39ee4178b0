"""The held-out generalization experiments (matrix sensing, attention, LoRA) run at tiny
scale, and their reports' verdicts follow from their own intervals."""

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
        paired_interval(
            schedules["switch-off"]["held_out"], schedules["never"]["held_out"]
        ),
        paired_interval(
            schedules["switch-off"]["held_out"], schedules["always"]["held_out"]
        ),
    )
    assert results["verdict"] == expected and expected in text
    assert all(path.exists() for path in figures)


def test_models_tiny_run_and_report(tmp_path):
    """Attention and LoRA (tiny): every candidate trains to finite points, and each
    task's verdict follows from its own intervals."""
    from jaxmirror.experiments import models_generalization

    results = models_generalization.run("tiny")
    text, figures = models_generalization.report(results, tmp_path)
    for name in ("attention", "lora"):
        r = results[name]
        assert set(r) == {"never", "always", "switch-off"}
        expected = verdict(
            paired_interval(r["switch-off"]["held_out"], r["never"]["held_out"]),
            paired_interval(r["switch-off"]["held_out"], r["always"]["held_out"]),
        )
        assert results["verdicts"][name] == expected
        assert np.all(np.isfinite(r["never"]["relative_error"]))
    assert all(path.exists() for path in figures)
