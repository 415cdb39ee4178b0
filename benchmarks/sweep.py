"""Sparse-recovery sweep at scale: jaxmirror vs scipy and torchdiffeq, side by side.

Hadamard pair, Z Gaussian (d x n) scaled by 1/sqrt(d), 5-sparse truth, m0 = 1, w0 = 0,
SwitchOff over a grid alpha in [0, 0.1] x t_off in [10, 100], T = 200, the sweep's
default tolerances for each precision (rtol 1e-6, atol 1e-9 in float64; 100 and 1
epsilons in float32), for every method. For each size, in one run:

- jaxmirror `jm.sweep`: vmap of independent row-space solves (the default: d state
  coordinates per configuration), one batched state with the row-space and parameter
  formulations, and vmap of dual solves (n coordinates); the configuration axis is
  sharded over all local devices (on a CPU, one XLA host device per core); at the
  large size only the default and the previous best (batched parameter) run;
- a Python loop of `scipy.integrate.solve_ivp` (RK45, same tolerances) on the
  parameter-space ODE, one configuration at a time (timed on `--scipy-configs`
  configurations spread over the grid and extrapolated to K: said so in the table);
- torchdiffeq `odeint` (dopri5, same tolerances) with all K configurations in one
  batched state, hand-written vector field (optional: the `bench` extra);
- with `--kernel on` (default on a GPU): the fused Pallas flow kernel
  (`backend="pallas"`, row-space formulation) beside the XLA rows;
- the achieved GFLOP/s of the batched vector field (two GEMMs of 2*K*n*d flops per
  evaluation, 6 evaluations per Tsit5 step) against this machine's measured GEMM peak
  (a 2048^3 matmul through JAX, same dtype), and the achieved fraction of the memory
  bound: the bytes an unfused evaluation moves (the (K, n) point and the (K, d)
  predictions, written and read once each) against a measured copy bandwidth. The
  kernel keeps those on chip: its memory fraction is not comparable and not shown.

    python benchmarks/sweep.py                     # CPU table: (40,100) and (200,1000), K=1024
    python benchmarks/sweep.py --preset gpu        # K up to 65,536 (under 8 minutes on a GPU)
    python benchmarks/sweep.py --preset smoke      # tiny, for testing the script
"""

import argparse
import os
import time


if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={os.cpu_count()}"
    )

import jax
import numpy as np


COLUMNS = [
    "dtype",
    "(d, n)",
    "K",
    "method",
    "time (s)",
    "configs/s",
    "slower than best jaxmirror",
    "note",
]

PRESETS = {
    "cpu": dict(
        sizes=[(40, 100), (200, 1000)],
        configs=[1024],
        dtypes=["float64", "float32"],
        scipy_configs={(40, 100): 1024, (200, 1000): 8},
        torch=True,
    ),
    "gpu": dict(
        sizes=[(40, 100), (200, 1000)],
        configs=[1024, 4096, 16384, 65536],
        dtypes=["float32", "float64"],
        scipy_configs={(40, 100): 16, (200, 1000): 4},
        torch=True,
    ),
    "smoke": dict(
        sizes=[(8, 20)],
        configs=[16],
        dtypes=["float64"],
        scipy_configs={(8, 20): 2},
        torch=True,
    ),
}


def gemm_peak(dtype):
    import jax.numpy as jnp
    from _common import min_time

    a = jnp.ones((2048, 2048), dtype)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    return 2 * 2048**3 / min_time(lambda: f(a), repeat=3) / 1e9


def copy_bandwidth(dtype):
    """GB/s of `x * 2` on a 128 MiB array (read once, written once) through JAX."""
    import jax.numpy as jnp
    from _common import min_time

    x = jnp.ones((128 * 2**20 // jnp.dtype(dtype).itemsize,), dtype)
    f = jax.jit(lambda x: x * 2)
    f(x).block_until_ready()
    return 2 * x.nbytes / min_time(lambda: f(x), repeat=3) / 1e9


def torch_batched(Z, y, alphas, t_offs, t1, rtol, atol, dtype):
    import torch
    from torchdiffeq import odeint

    tdtype = torch.float64 if dtype == "float64" else torch.float32
    Zt, yt = torch.tensor(Z, dtype=tdtype), torch.tensor(y, dtype=tdtype)
    al = torch.tensor(alphas, dtype=tdtype)[:, None]
    to = torch.tensor(t_offs, dtype=tdtype)[:, None]
    K, n = len(alphas), Z.shape[1]
    evaluations = [0]

    def field(t, state):
        evaluations[0] += 1
        m, w = state[:, :n], state[:, n:]
        grad = torch.addmm(-yt, m * w, Zt.T) @ Zt
        a = al * (t < to).to(tdtype)
        return torch.cat([-w * grad - a * m, -m * grad - a * w], dim=1)

    y0 = torch.cat([torch.ones(K, n, dtype=tdtype), torch.zeros(K, n, dtype=tdtype)], 1)
    start = time.perf_counter()
    with torch.no_grad():
        out = odeint(
            field,
            y0,
            torch.tensor([0.0, t1], dtype=tdtype),
            method="dopri5",
            rtol=rtol,
            atol=atol,
        )
    seconds = time.perf_counter() - start
    final = out[-1]
    return seconds, (final[:, :n] * final[:, n:]).numpy(), evaluations[0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--t1", type=float, default=200.0)
    parser.add_argument(
        "--kernel",
        choices=["on", "off", "auto"],
        default="auto",
        help="add the fused Pallas flow kernel's rows (auto: on a GPU, or --preset smoke)",
    )
    args = parser.parse_args()
    preset = PRESETS[args.preset]
    tolerances = {}

    from _common import git_revision, machine, markdown_table, scipy_loop, stamp

    rows, notes = [], []
    for dtype in preset["dtypes"]:
        jax.config.update("jax_enable_x64", dtype == "float64")
        import jax.numpy as jnp

        import jaxmirror as jm
        from jaxmirror._sweep import SWEEP_TOLERANCES
        from jaxmirror._tolerances import precision_tolerances

        rtol, atol = precision_tolerances(
            jnp.dtype(dtype), None, None, SWEEP_TOLERANCES
        )
        tolerances[dtype] = f"{rtol:.2g} / {atol:.2g}"
        peak = gemm_peak(jnp.float64 if dtype == "float64" else jnp.float32)
        bandwidth = copy_bandwidth(jnp.float64 if dtype == "float64" else jnp.float32)
        notes.append(f"GEMM peak ({dtype}, 2048^3 through JAX): {peak:.1f} GFLOP/s")
        notes.append(f"copy bandwidth ({dtype}, 128 MiB x * 2): {bandwidth:.1f} GB/s")
        kernel = args.kernel == "on" or (
            args.kernel == "auto"
            and (jax.default_backend() == "gpu" or args.preset == "smoke")
        )
        for d, n in preset["sizes"]:
            problem, x_star = jm.datasets.sparse_regression(
                n=n, d=d, sparsity=5, seed=0
            )
            Z, y = np.asarray(problem.Z), np.asarray(problem.y)
            jdtype = jnp.float64 if dtype == "float64" else jnp.float32
            problem = jm.LeastSquares(jnp.asarray(Z, jdtype), jnp.asarray(y, jdtype))
            pair = jm.Hadamard()
            w0 = pair.init(jnp.zeros(n, jdtype), scale=jnp.asarray(1.0, jdtype))
            for K in preset["configs"]:
                side = int(np.ceil(np.sqrt(K)))
                axes = jm.grid(
                    alpha=np.linspace(0, 0.1, side), t_off=np.linspace(10, 100, side)
                )
                alphas, t_offs = axes["alpha"][:K], axes["t_off"][:K]
                schedules = jm.SwitchOff(
                    alpha=jnp.asarray(alphas, jdtype), t_off=jnp.asarray(t_offs, jdtype)
                )
                results, strategy_rows, group_start = {}, [], len(rows)
                large = n * K >= 10**6  # one timed run (compile included) when large
                strategies = [
                    ("vmap", "rowspace"),
                    ("batched", "parameter"),
                    ("batched", "rowspace"),
                    ("vmap", "dual"),
                ]
                chosen = strategies[:2] if large else strategies
                if kernel:
                    chosen = [("kernel", "rowspace"), *chosen]
                for strategy, formulation in chosen:
                    backend = "pallas" if strategy == "kernel" else "xla"
                    run = lambda: jm.sweep(
                        problem,
                        pair,
                        schedules,
                        w0,
                        args.t1,
                        strategy="auto" if strategy == "kernel" else strategy,
                        formulation=formulation,
                        backend=backend,
                        predict=False,
                        progress=False,
                        rtol=rtol,
                        atol=atol,
                        chunk_size=K,
                    )
                    start = time.perf_counter()
                    ds = run()
                    first = seconds = time.perf_counter() - start
                    if not large:
                        start = time.perf_counter()
                        ds = run()
                        seconds = time.perf_counter() - start
                    steps = ds.num_steps.values
                    evals = 6.0 * float(
                        steps.max() if strategy == "batched" else steps.mean()
                    )
                    gflops = 2 * 2 * K * n * d * evals / seconds / 1e9
                    itemsize = jnp.dtype(jdtype).itemsize
                    moved = 2 * K * (n + d) * itemsize * evals / seconds / 1e9
                    memory = (
                        "state on chip"
                        if strategy == "kernel"
                        else f"{100 * moved / bandwidth:.0f}% of copy bandwidth"
                    )
                    results[(strategy, formulation)] = (seconds, ds.x_final.values)
                    ok = int((ds.status.values == 0).sum())
                    strategy_rows.append(
                        [
                            dtype,
                            f"({d}, {n})",
                            K,
                            "jaxmirror sweep (Pallas kernel, rowspace)"
                            if strategy == "kernel"
                            else f"jaxmirror sweep ({strategy}, {formulation})",
                            f"{seconds:.2f}",
                            f"{K / seconds:.1f}",
                            seconds,
                            (
                                "one run, compile included; "
                                if large
                                else f"compile {first - seconds:.1f} s; "
                            )
                            + f"{gflops:.1f} GFLOP/s ({100 * gflops / peak:.0f}% "
                            f"of peak); {memory}; {ok}/{K} ok",
                        ]
                    )
                fastest = min(r[6] for r in strategy_rows)
                for r in strategy_rows:
                    r[6] = f"{r[6] / fastest:.1f}"
                rows += strategy_rows
                best = min(results, key=lambda s: results[s][0])
                best_s, best_x = results[best]
                count = min(preset["scipy_configs"][(d, n)], K)
                if dtype == "float64":
                    per_config, finals, index = scipy_loop(
                        Z, y, alphas, t_offs, count, args.t1, rtol, atol
                    )
                    total = per_config * K
                    diff = np.max(np.abs(finals - best_x[index]))
                    how = (
                        "measured"
                        if count == K
                        else f"extrapolated from {count} spread over the grid"
                    )
                    rows.append(
                        [
                            dtype,
                            f"({d}, {n})",
                            K,
                            "scipy solve_ivp RK45 loop",
                            f"{total:.1f}",
                            f"{K / total:.2f}",
                            f"{total / best_s:.0f}",
                            f"{how} configs; {per_config * 1e3:.0f} ms/config; "
                            f"max abs diff {diff:.1e}",
                        ]
                    )
                if preset["torch"]:
                    try:
                        seconds, finals, evals = torch_batched(
                            Z, y, alphas, t_offs, args.t1, rtol, atol, dtype
                        )
                        diff = np.max(np.abs(finals - best_x))
                        rows.append(
                            [
                                dtype,
                                f"({d}, {n})",
                                K,
                                "torchdiffeq dopri5, batched",
                                f"{seconds:.2f}",
                                f"{K / seconds:.1f}",
                                f"{seconds / best_s:.1f}",
                                f"{evals} evaluations; max abs diff {diff:.1e}",
                            ]
                        )
                    except ImportError:
                        rows.append(
                            [
                                dtype,
                                f"({d}, {n})",
                                K,
                                "torchdiffeq",
                                "-",
                                "-",
                                "-",
                                "not installed (pip install -e '.[bench]')",
                            ]
                        )
                print(
                    markdown_table(COLUMNS, rows[group_start:]),
                    flush=True,
                )

    print()
    print(f"# Sweep benchmark ({args.preset}), {stamp()}, commit {git_revision()}")
    print(f"Machine: {machine()}; {len(jax.devices())} JAX devices")
    print(
        f"Sparse recovery, Hadamard, SwitchOff grid alpha in [0, 0.1] x t_off in "
        f"[10, 100], T = {args.t1}, rtol / atol "
        + ", ".join(f"{v} in {k}" for k, v in tolerances.items())
    )
    print()
    print(markdown_table(COLUMNS, rows))
    print()
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
