"""Bring your own pair: what the numerical Legendre function costs, side by side.

A user-written copy of Hadamard (g, h and init only, `jm.AbstractSeparablePair`)
against `jm.Hadamard` (closed form), in one run:

1. `jm.implicit_bias` at (d, n) = (40, 100), Hadamard scale 0.1, SwitchOff(1, 2):
   the call as a user makes it (eager, checks included) and the same call under
   `jax.jit` (the computation alone); the answers' largest difference;
2. `jm.solve` of the user's pair in each formulation (the evidence for `"auto"`
   choosing the parameter formulation for these pairs).

    python benchmarks/user_pair.py
    python benchmarks/user_pair.py --n 20 --d 8 --repeat 1 --formulations parameter,dual
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _common import git_revision, machine, markdown_table, min_time, stamp

import jaxmirror as jm


class UserHadamard(jm.AbstractSeparablePair):
    def g(self, w):
        m, v = w
        return m * v

    def h(self, w):
        m, v = w
        return 0.5 * (jnp.sum(m**2) + jnp.sum(v**2))

    def init(self, x0=None, scale=1.0, *, key=None):
        return jm.Hadamard().init(x0, scale)


def _problem(d, n, seed=0):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((d, n))
    truth = np.zeros(n)
    truth[:5] = 1.0
    return jm.LeastSquares(jnp.asarray(Z), jnp.asarray(Z @ truth))


def bias_rows(d, n, repeat):
    problem = _problem(d, n)
    w0 = jm.Hadamard().init(jnp.zeros(n), 0.1)
    schedule = jm.SwitchOff(1.0, 2.0)
    rows, answers, times = [], {}, {}
    for name, pair in (
        ("jm.Hadamard (closed form)", jm.Hadamard()),
        ("user copy (flows)", UserHadamard()),
    ):
        eager = lambda pair=pair: jm.implicit_bias(problem, pair, schedule, w0)  # noqa: E731
        jitted = jax.jit(lambda s, pair=pair: jm.implicit_bias(problem, pair, s, w0))
        answers[name] = eager()
        jitted(schedule)
        times[name] = (
            min_time(eager, repeat),
            min_time(lambda: jitted(schedule), repeat),
        )
    base = times["jm.Hadamard (closed form)"]
    for name, (eager_s, jit_s) in times.items():
        rows.append(
            [
                name,
                f"{eager_s * 1e3:.2f} ms",
                f"{eager_s / base[0]:.1f}x",
                f"{jit_s * 1e3:.2f} ms",
                f"{jit_s / base[1]:.1f}x",
            ]
        )
    values = list(answers.values())
    return rows, float(jnp.max(jnp.abs(values[0] - values[1])))


def solve_rows(repeat, formulations):
    problem = _problem(3, 8)
    w0 = jm.Hadamard().init(
        jnp.asarray(0.05 * np.random.default_rng(0).standard_normal(8)), 0.5
    )
    schedule = jm.SwitchOff(0.5, 2.0)
    reference = jm.solve(
        problem, jm.Hadamard(), schedule, w0, t1=20.0, formulation="parameter"
    )
    rows = []
    for formulation in formulations:
        call = lambda f=formulation: (
            jm.solve(  # noqa: E731
                problem, UserHadamard(), schedule, w0, t1=20.0, formulation=f
            ).x_final
        )
        difference = float(jnp.max(jnp.abs(call() - reference.x_final)))
        rows.append(
            [formulation, f"{min_time(call, repeat) * 1e3:.1f} ms", f"{difference:.1e}"]
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--d", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--formulations",
        default="parameter,rowspace,dual,mirror",
        help="comma-separated formulations for the solve table",
    )
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    jm.enable_compilation_cache()
    print(f"{stamp()} | {machine()} | git {git_revision()}")
    rows, difference = bias_rows(args.d, args.n, args.repeat)
    print(f"\njm.implicit_bias, (d, n) = ({args.d}, {args.n}), min of {args.repeat}:\n")
    print(markdown_table(["pair", "call", "ratio", "under jax.jit", "ratio"], rows))
    print(f"\nlargest |x difference| between the two: {difference:.1e}")
    print("\njm.solve of the user's copy, (d, n) = (3, 8), t1 = 20, per formulation:\n")
    print(
        markdown_table(
            ["formulation", "time", "max |x - parameter flow of jm.Hadamard|"],
            solve_rows(args.repeat, args.formulations.split(",")),
        )
    )


if __name__ == "__main__":
    main()
