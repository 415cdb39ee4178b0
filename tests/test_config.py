"""The configuration file reaches every pair and schedule the library has, with the
names and parameters of the library's own registries."""

import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmirror as jm
from jaxmirror import _config
from jaxmirror._formulations import FORMULATIONS
from jaxmirror._kernels import BACKENDS
from jaxmirror._pairs import PAIRS
from jaxmirror._schedules import SCHEDULES
from jaxmirror._sweep import STRATEGIES


SPARSE = {"kind": "sparse_regression", "n": 12, "d": 5, "sparsity": 2, "seed": 1}
COMMUTING = {"kind": "commuting_sensing", "n": 4, "d": 6, "rank": 1, "seed": 0}

# name -> (problem, pair entry, init entry, the pair and w0 the API builds)
_PAIR_CASES = {
    "hadamard": (SPARSE, "hadamard", {"scale": 0.5}),
    "diff_squares": (SPARSE, "diff_squares", {"x0": 0.1, "scale": 0.5}),
    "square": (SPARSE, "square", {"x0": 0.2}),
    "power_difference": (
        SPARSE,
        {"kind": "power_difference", "depth": 3, "regularizer": "l2"},
        {"scale": 0.5},
    ),
    "log_difference": (SPARSE, "log_difference", {"scale": 0.5}),
    "matrix_factorization": (
        COMMUTING,
        {"kind": "matrix_factorization", "rank": 4},
        {"aligned": True, "scale": 1.0},
    ),
    "symmetric_factorization": (
        {**COMMUTING, "symmetric": True},
        {"kind": "symmetric_factorization", "rank": 4},
        {"scale": 0.01, "seed": 3},
    ),
}


def _expected_pair(name):
    problem, X, P, _ = jm.datasets.commuting_sensing(n=4, d=6, rank=1, seed=0)
    n = 12
    return {
        "hadamard": (jm.Hadamard(), jm.Hadamard().init(jnp.zeros(n), 0.5)),
        "diff_squares": (
            jm.DiffSquares(),
            jm.DiffSquares().init(jnp.full(n, 0.1), 0.5),
        ),
        "square": (jm.Square(), jm.Square().init(jnp.full(n, 0.2))),
        "power_difference": (
            jm.PowerDifference(3, regularizer="l2"),
            jm.PowerDifference(3, regularizer="l2").init(jnp.zeros(n), 0.5),
        ),
        "log_difference": (
            jm.LogDifference(),
            jm.LogDifference().init(jnp.zeros(n), 0.5),
        ),
        "matrix_factorization": (
            jm.MatrixFactorization((4, 4), rank=4),
            jm.MatrixFactorization((4, 4), rank=4).init_aligned(jnp.asarray(P), 1.0),
        ),
        "symmetric_factorization": (
            jm.SymmetricFactorization(4, rank=4),
            jm.SymmetricFactorization(4, rank=4).init(
                scale=0.01, key=jax.random.PRNGKey(3)
            ),
        ),
    }[name]


def _raw(problem, pair, init, schedule=None):
    schedule = schedule or {
        "kind": "switch_off",
        "grid": {"alpha": [0.0, 0.1, 2], "t_off": {"values": [1.0, 2.0]}},
    }
    return dict(problem=problem, pair=pair, init=init, schedule=schedule, t1=5.0)


def test_the_cases_cover_every_registered_pair_and_schedule():
    assert set(_PAIR_CASES) == set(PAIRS)
    assert set(_SCHEDULE_CASES) == set(SCHEDULES)


def test_the_configurations_choices_are_the_registries():
    assert _config.FORMULATIONS == ("auto", *FORMULATIONS)
    assert _config.STRATEGIES == ("auto", *STRATEGIES)
    assert _config.BACKENDS == ("auto", *BACKENDS)


@pytest.mark.parametrize("name", sorted(_PAIR_CASES))
def test_every_pair_is_reachable_from_a_configuration(name):
    """The configured pair and initialisation are those the API builds, and the
    sweep they make runs."""
    spec = _config.build(_raw(*_PAIR_CASES[name]))
    pair, w0 = _expected_pair(name)
    assert eqx.tree_equal(spec.pair, pair)
    for got, want in zip(
        jax.tree_util.tree_leaves(spec.w0), jax.tree_util.tree_leaves(w0)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=0)
    ds = jm.sweep(
        *(spec.problem, spec.pair, spec.schedules, spec.w0, spec.t1),
        truth=spec.truth,
        progress=False,
        predict=False,
        **spec.options,
    )
    assert np.all(ds.status.values == jm.Status.SUCCESS)
    assert ds.recovery_error.shape == (4,)


# name -> (schedule entry, one configuration as the API builds it)
_SCHEDULE_CASES = {
    "constant": (
        {"grid": {"alpha": {"values": [0.1, 0.2]}}},
        jm.Constant(0.2),
    ),
    "switch_off": (
        {"grid": {"alpha": [0.1, 0.2, 2]}, "fixed": {"t_off": 3.0}},
        jm.SwitchOff(0.2, 3.0),
    ),
    "piecewise_constant": (
        {
            "grid": {"values": {"values": [[0.1, 0.05, 0.0], [0.2, 0.1, 0.0]]}},
            "fixed": {"boundaries": [1.0, 2.0]},
        },
        jm.PiecewiseConstant(jnp.array([1.0, 2.0]), jnp.array([0.2, 0.1, 0.0])),
    ),
    "piecewise_switch_off": (
        {
            "grid": {"boundaries": {"values": [[1.0, 2.0], [1.5, 3.0]]}},
            "fixed": {"values": [0.1, 0.05]},
        },
        jm.PiecewiseSwitchOff.from_values(
            jnp.array([1.5, 3.0]), jnp.array([0.1, 0.05])
        ),
    ),
    "linear_decay": (
        {"grid": {"alpha": [0.1, 0.2, 2]}, "fixed": {"t_end": 4.0, "alpha_end": 0.01}},
        jm.LinearDecay(0.2, 4.0, 0.01),
    ),
    "cosine": (
        {"grid": {"t_end": [2.0, 4.0, 2]}, "fixed": {"alpha": 0.1}},
        jm.Cosine(0.1, 4.0),
    ),
    "exponential_decay": (
        {"grid": {"rate": {"values": [0.5, 1.0]}}, "fixed": {"alpha": 0.1}},
        jm.ExponentialDecay(0.1, 1.0),
    ),
}


@pytest.mark.parametrize("name", sorted(_SCHEDULE_CASES))
def test_every_schedule_family_is_reachable_from_a_configuration(name):
    """The configured batch's last configuration is the schedule the API builds
    (alpha and a_t agree at several times), and the sweep runs."""
    entry, expected = _SCHEDULE_CASES[name]
    spec = _config.build(_raw(SPARSE, "hadamard", {}, {"kind": name, **entry}))
    last = jax.tree_util.tree_map(
        lambda leaf, one: leaf[-1] if leaf.ndim > one.ndim else leaf,
        spec.schedules,
        expected,
    )
    ts = jnp.linspace(0.0, 6.0, 13)
    np.testing.assert_allclose(jax.vmap(last)(ts), jax.vmap(expected)(ts), rtol=1e-14)
    np.testing.assert_allclose(
        jax.vmap(last.a)(ts), jax.vmap(expected.a)(ts), rtol=1e-14, atol=1e-15
    )
    ds = jm.sweep(
        *(spec.problem, spec.pair, spec.schedules, spec.w0, spec.t1),
        progress=False,
        predict=False,
    )
    assert np.all(ds.status.values == jm.Status.SUCCESS)


def test_schedule_parameters_given_twice_or_not_at_all_are_refused():
    base = dict(kind="switch_off", grid={"alpha": [0.1, 0.2, 2]})
    with pytest.raises(
        _config.ConfigError, match=r"schedule: \['alpha'\] given in both"
    ):
        _config.build(
            _raw(
                SPARSE, "hadamard", {}, {**base, "fixed": {"alpha": 0.1, "t_off": 1.0}}
            )
        )
    with pytest.raises(_config.ConfigError, match=r"schedule.grid: misses \['t_off'\]"):
        _config.build(_raw(SPARSE, "hadamard", {}, base))
    with pytest.raises(_config.ConfigError, match="schedule.grid: needs at least one"):
        _config.build(
            _raw(
                SPARSE,
                "hadamard",
                {},
                {"kind": "switch_off", "fixed": {"alpha": 0.1, "t_off": 1.0}},
            )
        )


def test_a_pairs_parameters_are_checked_by_the_pair():
    with pytest.raises(_config.ConfigError, match="pair: `depth` must be an int >= 2"):
        _config.build(_raw(SPARSE, {"kind": "power_difference", "depth": 1}, {}))
    with pytest.raises(
        _config.ConfigError, match=r"pair: unknown key\(s\) \['width'\]"
    ):
        _config.build(_raw(SPARSE, {"kind": "hadamard", "width": 2}, {}))
    with pytest.raises(_config.ConfigError, match="init.aligned: needs commuting"):
        _config.build(
            _raw(
                {"kind": "gaussian_sensing", "n1": 3, "n2": 3, "d": 4, "rank": 1},
                {"kind": "matrix_factorization", "rank": 3},
                {"aligned": True},
            )
        )


@pytest.mark.parametrize(
    "path",
    sorted(pathlib.Path(__file__).parents[1].joinpath("examples").glob("*.yaml")),
    ids=lambda p: p.stem,
)
def test_the_example_configurations_build(path):
    spec = _config.build(_config.load(path), base=path.parent)
    assert spec.schedules.alpha.size >= 1 and spec.t1 > 0


def test_the_reference_page_is_generated_from_the_library():
    """docs/configuration.md is what `python -m jaxmirror._config_reference` prints
    (regenerate it after changing a pair, schedule or key), and names every pair,
    schedule and problem kind the configuration accepts."""
    from jaxmirror import _config_reference, cli

    page = pathlib.Path(__file__).parents[1] / "docs" / "configuration.md"
    text = page.read_text()
    assert text == _config_reference.reference(), (
        "docs/configuration.md is stale: python -m jaxmirror._config_reference > "
        "docs/configuration.md"
    )
    for name in [*_config.PAIRS, *_config.SCHEDULES, *jm.datasets.GENERATORS]:
        assert f"`{name}`" in text, name
    sweep_help = cli._parser()._subparsers._group_actions[0].choices["sweep"]
    assert "docs/configuration.md" in sweep_help.format_help()
    assert "_config.py" not in sweep_help.format_help()
