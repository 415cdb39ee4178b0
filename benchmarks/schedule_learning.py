"""Learning the schedule vs a grid sweep with the same number of outcome evaluations.

Sparse recovery (Hadamard, m0 = 1, w0 = 0, n = 100, d = 40, 5-sparse truth); the
objective is the mean squared error on 60 held-out measurements of the truth. Two routes
to a good weight-decay schedule, each using N evaluations of where training ends
(`jm.implicit_bias`, differentiable):

- grid: SwitchOff over a sqrt(N) x sqrt(N) grid of (alpha, t_off), one vmapped call;
- learned: `jm.optimize_schedule` over `jm.PiecewiseSwitchOff` (4 pieces), N Adam steps.

Then the same two with the flow itself (`via="solve"`, T = 200), fewer evaluations.

    python benchmarks/schedule_learning.py [--evaluations 64]
"""

import argparse
import time

import jax


jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp
import numpy as np
import optax
from _common import git_revision, machine, markdown_table, stamp

import jaxmirror as jm


jm.enable_compilation_cache()  # a script is an entry point (jaxmirror/_cache.py)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--evaluations", type=int, default=64)
    parser.add_argument("--solve-evaluations", type=int, default=16)
    args = parser.parse_args()
    problem, x_star = jm.datasets.sparse_regression(n=100, d=40, sparsity=5, seed=0)
    rng = np.random.default_rng(123)
    Z_val = jnp.asarray(rng.standard_normal((60, 100)) / np.sqrt(40))
    y_val = Z_val @ jnp.asarray(x_star)
    pair = jm.Hadamard()
    w0 = pair.init(jnp.zeros(100), scale=1.0)

    def validation(x):
        return jnp.mean((Z_val @ x - y_val) ** 2)

    rows = []
    for via, n_eval, t1 in (
        ("implicit_bias", args.evaluations, None),
        ("solve", args.solve_evaluations, 200.0),
    ):
        side = int(round(np.sqrt(n_eval)))
        alphas, t_offs = np.meshgrid(
            np.linspace(0.0, 0.1, side), np.linspace(10, 100, side)
        )
        grid = jm.SwitchOff(
            alpha=jnp.asarray(alphas.ravel()), t_off=jnp.asarray(t_offs.ravel())
        )
        if via == "implicit_bias":
            outcome = lambda s: validation(jm.implicit_bias(problem, pair, s, w0))
        else:
            outcome = lambda s: validation(
                jm.solve(problem, pair, s, w0, t1=t1, formulation="parameter").x_final
            )
        grid_fn = jax.jit(jax.vmap(outcome))
        start = time.perf_counter()
        values = np.asarray(grid_fn(grid))
        grid_s = time.perf_counter() - start
        best = int(np.argmin(values))
        rows.append(
            [
                f"grid {side}x{side} SwitchOff ({via})",
                side * side,
                f"{values[best]:.3e}",
                f"alpha={alphas.ravel()[best]:.3f}, t_off={t_offs.ravel()[best]:.0f}",
                f"{grid_s:.1f}",
            ]
        )

        start_schedule = jm.PiecewiseSwitchOff.from_values(
            jnp.array([25.0, 50.0, 75.0, 100.0]), jnp.full(4, 0.02)
        )
        result = jm.optimize_schedule(
            problem,
            pair,
            w0,
            validation,
            start_schedule,
            steps=side * side,
            optimizer=optax.adam(0.3),
            via=via,
            t1=t1,
            solve_options=dict(formulation="parameter"),
        )
        values = np.round(np.asarray(result.schedule.values()[:-1]), 3)
        rows.append(
            [
                f"optimize_schedule, 4-piece switch-off ({via})",
                result.num_solves,
                f"{float(jnp.min(result.history)):.3e}",
                f"alpha pieces {values}",
                f"{result.seconds:.1f}",
            ]
        )

    print(f"# Schedule learning vs grid, {stamp()}, commit {git_revision()}")
    print(f"Machine: {machine()}")
    print(
        "Objective: held-out MSE (60 measurements) of where training ends; "
        "wall times include compilation."
    )
    print()
    print(
        markdown_table(
            ["method", "evaluations", "best validation MSE", "schedule", "wall (s)"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
