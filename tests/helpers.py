"""Shared test cases and assertions."""

import dataclasses
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

import jaxmirror as jm


@dataclasses.dataclass(frozen=True)
class Domain:
    """Where a pair's model points live and how the tests initialise it."""

    positive: bool  # x = g(w) >= 0 (the square pair)
    init: dict  # keyword arguments of `pair.init` besides x0

    def init_at(self, scale) -> dict:
        """`init` keyword arguments at this scale (none for a pair without a scale)."""
        return {} if "scale" not in self.init else dict(scale=scale)

    def point(self, key, n, size=0.3):
        """A random initial point inside the domain (both signs where allowed)."""
        if self.positive:
            return size * (1.0 / 3.0 + jax.random.uniform(key, (n,)))
        return size * jax.random.normal(key, (n,))


CLOSED_FORM_PAIRS = [jm.Hadamard(), jm.DiffSquares(), jm.Square()]
PAIR_IDS = ["hadamard", "diff_squares", "square"]
DOMAINS = {
    "Hadamard": Domain(positive=False, init=dict(scale=0.5)),
    "DiffSquares": Domain(positive=False, init=dict(scale=0.5)),
    "Square": Domain(positive=True, init={}),
}


def domain(pair) -> Domain:
    return DOMAINS[type(pair).__name__]


SCHEDULES = {
    "constant": jm.Constant(0.07),
    "switch_off": jm.SwitchOff(0.1, 3.0),
    "piecewise": jm.PiecewiseConstant([1.0, 2.5], [0.2, 0.05, 0.0]),
    "linear": jm.LinearDecay(0.2, 4.0),
    "linear_to_floor": jm.LinearDecay(0.2, 4.0, alpha_end=0.01),
    "cosine": jm.Cosine(0.2, 5.0),
    "exponential": jm.ExponentialDecay(0.3, 0.7),
}


def random_instance(key, pair, n=12, d=5, sparse=3):
    """A random least-squares instance and a random, non-zero initialisation."""
    kz, kx, k0 = jax.random.split(key, 3)
    Z = jax.random.normal(kz, (d, n)) / jnp.sqrt(d)
    x_star = jnp.zeros(n).at[:sparse].set(1.0 + jax.random.uniform(kx, (sparse,)))
    where = domain(pair)
    w0 = pair.init(where.point(k0, n), **where.init)
    return jm.LeastSquares(Z, Z @ x_star), w0, x_star


def assert_tree_allclose(actual, expected, *, rtol, atol, what=""):
    """Same structure, then every leaf close, with a per-leaf report on failure."""
    s1, s2 = (
        jax.tree_util.tree_structure(actual),
        jax.tree_util.tree_structure(expected),
    )
    assert s1 == s2, f"{what}: tree structures differ: {s1} vs {s2}"
    for i, (a, e) in enumerate(
        zip(jax.tree_util.tree_leaves(actual), jax.tree_util.tree_leaves(expected))
    ):
        a, e = np.asarray(a), np.asarray(e)
        assert a.shape == e.shape, f"{what} leaf {i}: shapes {a.shape} vs {e.shape}"
        np.testing.assert_allclose(
            a, e, rtol=rtol, atol=atol, err_msg=f"{what} leaf {i}"
        )


# `python -m jaxmirror.cli`, with Ctrl-C as in a terminal even where this suite runs as
# a background job (which starts with SIGINT ignored, as would the child).
_CLI_WITH_CTRL_C = (
    "import runpy, signal, sys; "
    "signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv[0] = 'jaxmirror'; "
    "runpy.run_module('jaxmirror.cli', run_name='__main__', alter_sys=True)"
)


def start_cli_sweep(config, out, resume: bool = False) -> subprocess.Popen:
    """`jaxmirror sweep CONFIG --out OUT [--resume]` in a process of its own, with its
    progress lines on `stderr` (a pipe, read line by line) and stdout discarded."""
    command = [sys.executable, "-c", _CLI_WITH_CTRL_C, "sweep", str(config)]
    command += ["--out", str(out)] + (["--resume"] if resume else [])
    return subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
