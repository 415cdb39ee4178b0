"""Every option checked by name, before any allocation or long computation: sizes that
cannot fit, values a cast would change silently, precisions that do not match, and
tolerances too loose to mean anything."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmirror as jm
from jaxmirror import _config, cli


PROBLEM, TRUTH = jm.datasets.sparse_regression(n=10, d=4, sparsity=2, seed=0)
PAIR = jm.Hadamard()
W0 = PAIR.init(jnp.zeros(10))
SCHEDULES = jm.SwitchOff(np.array([0.0, 0.1]), np.array([1.0, 2.0]))


def test_a_chunk_is_never_larger_than_the_sweep():
    """`chunk_size=10**9` on 2 configurations grew to 24 GB before: the chunk is the
    sweep's 2 configurations."""
    ds = jm.sweep(PROBLEM, PAIR, SCHEDULES, W0, 5.0, chunk_size=10**9, progress=False)
    assert ds.attrs["chunk_size"] == 2 and ds.sizes["config"] == 2


def test_a_chunk_that_cannot_fit_is_refused_with_the_estimate():
    big = jm.LeastSquares(jnp.ones((200, 2000)), jnp.ones(200))
    schedules = jm.SwitchOff(np.linspace(0, 0.1, 4096), np.ones(4096))
    with pytest.raises(
        ValueError, match=r"`chunk_size`: a chunk of 4096 .* would take"
    ):
        jm.sweep(
            big,
            PAIR,
            schedules,
            PAIR.init(jnp.zeros(2000)),
            5.0,
            chunk_size=4096,
            formulation="parameter",
            progress=False,
        )


GOOD = """\
problem: {kind: sparse_regression, n: 10, d: 4, sparsity: 2, seed: 0}
pair: hadamard
schedule:
  kind: switch_off
  grid: {alpha: [0.0, 0.1, 2], t_off: [1.0, 2.0, 2]}
t1: 5.0
"""


@pytest.mark.parametrize(
    "old, new, key",
    [
        ("n: 10", "n: 1e9", "problem.n: the problem's arrays"),
        (
            "d: 4, sparsity: 2",
            "d: 100000, sparsity: 2",
            "`problem`: one configuration's flow",
        ),
        ("n: 10, d: 4", "n: 100000, d: 100000", "problem.d: the problem's arrays"),
        (
            "alpha: [0.0, 0.1, 2], t_off: [1.0, 2.0, 2]",
            "alpha: [0.0, 0.1, 1000000], t_off: [1.0, 2.0, 1000000]",
            "schedule.grid: 1,000,000 x 1,000,000 = 1,000,000,000,000 configurations",
        ),
        (
            "alpha: [0.0, 0.1, 2]",
            "alpha: [0.0, 0.1, 1e12]",
            "schedule.grid.alpha: 1,000,000,000,000 points",
        ),
    ],
    ids=["n", "d", "n-and-d", "grid", "axis"],
)
def test_configured_sizes_are_bounded_before_allocation(
    tmp_path, capsys, old, new, key
):
    path = tmp_path / "c.yaml"
    path.write_text(GOOD.replace(old, new))
    status = cli.main(["sweep", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and key in err, err
    assert not (tmp_path / "out").exists()


def test_a_huge_chunk_size_in_a_configuration_runs_the_sweep(tmp_path):
    raw = _config.load(_write(tmp_path, GOOD + "sweep: {chunk_size: 1e12}\n"))
    spec = _config.build(raw)
    ds = jm.sweep(
        *(spec.problem, spec.pair, spec.schedules, spec.w0, spec.t1),
        progress=False,
        **spec.options,
    )
    assert ds.attrs["chunk_size"] == 4


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_aliases_that_expand_without_bound_are_refused_in_one_short_line(
    tmp_path, capsys
):
    """A 679-byte file of nested aliases named billions of values, and its error
    message was 32 MB: refused while counting, in one line of a few hundred
    characters."""
    bomb = "a: &a [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]\n"
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [{', '.join(['*' + previous] * 10)}]\n"
    text = GOOD.replace(
        "grid: {alpha: [0.0, 0.1, 2], t_off: [1.0, 2.0, 2]}",
        "grid: {alpha: {values: *i}, t_off: [1.0, 2.0, 2]}",
    )
    path = _write(tmp_path, bomb + text)
    status = cli.main(["sweep", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and len(err) < 400, len(err)


def test_bad_values_in_messages_are_shortened(tmp_path, capsys):
    text = GOOD.replace("t1: 5.0", f"t1: {['soon'] * 10_000}")
    status = cli.main(["sweep", str(_write(tmp_path, text)), "--out", "x"])
    err = capsys.readouterr().err
    assert status == 2 and "t1: must be a number > 0" in err and len(err) < 600


@pytest.mark.parametrize(
    "call, words",
    [
        (
            lambda: jm.implicit_bias(PROBLEM, PAIR, jm.SwitchOff(0.1, 1.0), W0, tol=-1),
            "`tol` must be a finite number > 0",
        ),
        (
            lambda: jm.implicit_bias(
                PROBLEM, PAIR, jm.SwitchOff(0.1, 1.0), W0, tol=float("nan")
            ),
            "`tol` must be a finite number > 0",
        ),
        (
            lambda: jm.implicit_bias(
                PROBLEM, PAIR, jm.SwitchOff(0.1, 1.0), W0, tol=2.0
            ),
            "`tol` is a relative tolerance: it must be < 1",
        ),
        (
            lambda: jm.implicit_bias(
                PROBLEM, PAIR, jm.SwitchOff(0.1, 1.0), W0, max_iter=0
            ),
            "`max_iter` must be an int >= 1",
        ),
        (
            lambda: jm.LeastSquares(np.asarray(PROBLEM.Z) + 0j, PROBLEM.y),
            "`Z` must be real, got a complex128 array",
        ),
        (
            lambda: jm.LeastSquares(PROBLEM.Z, np.asarray(PROBLEM.y) * (1 + 1j)),
            "`y` must be real",
        ),
        (lambda: jm.SwitchOff(0.1 + 0j, 1.0), "`alpha` must be real"),
        (lambda: PAIR.init(np.zeros(10) + 0j), "`x0` must be real"),
        (
            lambda: jm.grid(alpha=np.ones((2, 2))),
            "`alpha`: a grid axis is a non-empty 1-D array",
        ),
        (
            lambda: jm.grid(alpha=np.ones(2) * 1j),
            "`alpha`: a grid axis holds real numbers",
        ),
        (
            lambda: jm.sweep(
                PROBLEM, PAIR, SCHEDULES, W0, 5.0, truth=TRUTH * np.nan, progress=False
            ),
            "`truth` must be finite",
        ),
        (
            lambda: jm.sweep(
                PROBLEM,
                PAIR,
                SCHEDULES,
                W0,
                5.0,
                truth=np.asarray(TRUTH) + 0j,
                progress=False,
            ),
            "`truth` must be real numbers",
        ),
        (
            lambda: jm.sweep(
                PROBLEM, PAIR, SCHEDULES, W0, 5.0, resume=True, progress=False
            ),
            "`resume` continues a sweep stored in `out`",
        ),
        (
            lambda: jm.sweep(
                PROBLEM, PAIR, SCHEDULES, W0, 5.0, repair=True, progress=False
            ),
            "`repair` recomputes a resumed store's damage",
        ),
        (
            lambda: jm.solve(
                PROBLEM,
                PAIR,
                jm.SwitchOff(0.1, 1.0),
                jax.tree_util.tree_map(lambda w: w.astype(jnp.float32), W0),
                5.0,
            ),
            "`w0` is float32 but `problem` holds float64 arrays",
        ),
        (
            lambda: jm.sweep(
                PROBLEM,
                PAIR,
                SCHEDULES,
                jax.tree_util.tree_map(lambda w: w.astype(jnp.float32), W0),
                5.0,
                progress=False,
            ),
            "`w0` is float32 but `problem` holds float64",
        ),
        (
            lambda: jm.solve(
                PROBLEM, PAIR, jm.SwitchOff(0.1, 1.0), W0, 5.0, rtol=10.0, atol=10.0
            ),
            "`rtol` must be at most 0.1",
        ),
        (
            lambda: jm.solve(PROBLEM, PAIR, jm.SwitchOff(0.1, 1.0), W0, 5.0, atol=0.5),
            "`atol` must be at most 0.01",
        ),
        (
            lambda: jm.sweep(
                PROBLEM, PAIR, SCHEDULES, W0, 5.0, rtol=1.0, progress=False
            ),
            "`rtol` must be at most 0.1",
        ),
    ],
    ids=[
        "tol-negative",
        "tol-nan",
        "tol-one",
        "max_iter-zero",
        "complex-Z",
        "complex-y",
        "complex-alpha",
        "complex-x0",
        "grid-2d",
        "grid-complex",
        "truth-nan",
        "truth-complex",
        "resume-without-out",
        "repair-without-resume",
        "float32-w0-solve",
        "float32-w0-sweep",
        "loose-rtol",
        "loose-atol",
        "loose-sweep-rtol",
    ],
)
def test_every_option_is_checked_by_name(call, words):
    with pytest.raises(ValueError) as error:
        call()
    first = str(error.value).splitlines()[0]
    assert words in first, first


def test_float32_throughout_still_runs():
    """The precision check refuses mixtures only: float32 problem and w0 run."""
    as32 = lambda tree: jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x,
        tree,
    )
    problem = jm.LeastSquares(
        PROBLEM.Z.astype(jnp.float32), PROBLEM.y.astype(jnp.float32)
    )
    sol = jm.solve(problem, PAIR, jm.SwitchOff(0.1, 1.0), as32(W0), 5.0)
    assert sol.x_final.dtype == jnp.float32 and int(sol.status) == 0
