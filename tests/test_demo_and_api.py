"""The demo reproduces the switch-off effect; every public name is documented."""

import inspect

import numpy as np

import jaxmirror as jm
from jaxmirror import demo


def test_demo_switch_off_beats_never_and_always(tmp_path):
    results = demo.run()
    rows = {row["schedule"].split()[0]: row for row in results["rows"]}
    for row in rows.values():
        assert row["status"] == "SUCCESS"
        assert row["gap"] < 1e-6, row  # simulated endpoint = predicted limit
    assert rows["switch-off"]["simulated"] < rows["constant"]["simulated"]
    assert rows["switch-off"]["simulated"] < rows["no"]["simulated"]
    # Prediction and flow agree along the a_inf axis too.
    predicted = np.interp(
        results["a_simulated"],
        results["a_grid"][::-1],
        results["predicted_errors"][::-1],
    )
    np.testing.assert_allclose(results["simulated_errors"], predicted, rtol=1e-3)
    path = tmp_path / "demo.png"
    demo.plot(results, path)
    assert path.stat().st_size > 10_000


def test_public_api_is_documented():
    names = [n for n in dir(jm) if not n.startswith("_")]
    assert "solve" in names and "implicit_bias" in names
    for name in names:
        obj = getattr(jm, name)
        if inspect.ismodule(obj) or isinstance(obj, str):
            continue
        assert inspect.getdoc(obj), f"jm.{name} has no docstring"
