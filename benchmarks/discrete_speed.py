"""Discrete training at scale: K configurations of the demo problem, vmapped in one scan.

Side by side, in one run:

- jaxmirror: `jax.vmap` of `jm.train` (SGD with switch-off weight decay) over K
  SwitchOff schedules, one jitted `lax.scan`;
- (a) a Python loop over configurations of a jitted Optax update (what a JAX user writes
  first); timed on a subset of configurations and steps and extrapolated (said so);
- (b) a batched PyTorch loop (all K configurations in one (K, n) tensor, hand-written
  gradient, in-place updates, no autograd): the fastest plain PyTorch a user would write.
  Needs `pip install torch==2.13.0` (the `bench` extra); skipped otherwise.

    python benchmarks/discrete_speed.py [--configs 1024] [--steps 20000] [--dtype float32]
"""

import argparse
import os
import time


# One XLA host device per core: the configuration axis is sharded over them (on this
# 2-core machine that is 1.8x faster than one device running XLA's own threads).
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_force_host_platform_device_count={os.cpu_count()}"
    )

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--loop-configs", type=int, default=4)
    parser.add_argument("--loop-steps", type=int, default=2_000)
    parser.add_argument(
        "--kernel",
        choices=["auto", "on", "off"],
        default="auto",
        help="a row for the fused Pallas kernel (auto: on a GPU only; on a CPU it runs "
        "in interpret mode, for checking, not speed)",
    )
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", args.dtype == "float64")

    import equinox as eqx
    import jax.numpy as jnp
    import optax
    from _common import git_revision, machine, markdown_table, min_time, stamp

    import jaxmirror as jm

    dtype = jnp.float64 if args.dtype == "float64" else jnp.float32
    K, steps, lr = args.configs, args.steps, args.lr
    problem, _ = jm.datasets.sparse_regression(n=100, d=40, sparsity=5, seed=0)
    problem = jm.LeastSquares(problem.Z.astype(dtype), problem.y.astype(dtype))
    pair = jm.Hadamard()
    w0 = pair.init(jnp.zeros(100, dtype), scale=jnp.asarray(1.0, dtype))
    side = int(np.ceil(np.sqrt(K)))
    grid_a, grid_t = np.meshgrid(np.linspace(0, 0.1, side), np.linspace(10, 100, side))
    alphas = jnp.asarray(grid_a.ravel()[:K], dtype)
    t_offs = jnp.asarray(grid_t.ravel()[:K], dtype)
    devices = jax.devices()
    if K % len(devices) == 0:
        mesh = Mesh(np.array(devices), ("configs",))
        sharding = NamedSharding(mesh, PartitionSpec("configs"))
        alphas, t_offs = (
            jax.device_put(alphas, sharding),
            jax.device_put(t_offs, sharding),
        )
    schedules = jm.SwitchOff(alpha=alphas, t_off=t_offs)
    lr_arr = jnp.asarray(lr, dtype)

    def make_sweep(backend):
        @eqx.filter_jit
        def sweep(schedules):
            run = lambda s: (
                jm.train(
                    problem,
                    pair,
                    s,
                    w0,
                    lr=lr_arr,
                    steps=steps,
                    save_every=steps,
                    backend=backend,
                ).x_final
            )
            return jax.vmap(run)(schedules)

        return sweep

    sweep = make_sweep("xla")
    start = time.perf_counter()
    ours = jax.block_until_ready(sweep(schedules))
    compile_and_run = time.perf_counter() - start
    ours_s = min_time(lambda: sweep(schedules), repeat=3)
    rows = [
        [
            f"jaxmirror vmap(train) scan, {len(devices)} {devices[0].platform} devices",
            f"{ours_s:.2f}",
            f"{K * steps / ours_s:.3g}",
            "1.0",
            f"compile {compile_and_run - ours_s:.1f} s",
        ]
    ]
    kernel = args.kernel == "on" or (
        args.kernel == "auto" and jax.default_backend() == "gpu"
    )
    if kernel:  # the fused Pallas kernel, same iterates (see tests/test_kernels.py)
        fused = make_sweep("pallas")
        start = time.perf_counter()
        fused_x = jax.block_until_ready(fused(schedules))
        first = time.perf_counter() - start
        fused_s = min_time(lambda: fused(schedules), repeat=3)
        gap = float(jnp.max(jnp.abs(fused_x - ours)))
        rows.append(
            [
                "jaxmirror vmap(train) Pallas kernel"
                + (" (interpret mode)" if jax.default_backend() == "cpu" else ""),
                f"{fused_s:.2f}",
                f"{K * steps / fused_s:.3g}",
                f"{fused_s / ours_s:.2f}",
                f"compile {first - fused_s:.1f} s; max |x - scan| {gap:.1e}",
            ]
        )

    # (a) Python loop of jitted Optax updates, one configuration at a time.
    def loop_config(alpha, t_off, n_steps):
        sched = jm.SwitchOff(alpha, t_off)
        tx = optax.chain(
            optax.add_decayed_weights(sched.as_optax(lr_arr)), optax.sgd(lr)
        )
        state = tx.init(w0)

        @jax.jit
        def update(w, state):
            x, pullback = jax.vjp(pair.g, w)
            (grad,) = pullback(problem.grad(x))
            updates, state = tx.update(grad, state, w)
            return optax.apply_updates(w, updates), state

        w = w0
        update(w, state)  # compile outside the timing
        start = time.perf_counter()
        for _ in range(n_steps):
            w, state = update(w, state)
        jax.block_until_ready(w)
        return time.perf_counter() - start

    n_loop = min(args.loop_configs, K)
    loop_s = sum(
        loop_config(alphas[i], t_offs[i], args.loop_steps) for i in range(n_loop)
    )
    loop_total = loop_s * (K / n_loop) * (steps / args.loop_steps)
    rows.append(
        [
            "(a) Python loop of jitted Optax updates",
            f"{loop_total:.0f} (extrapolated)",
            f"{K * steps / loop_total:.3g}",
            f"{loop_total / ours_s:.0f}",
            f"measured {n_loop} configs x {args.loop_steps} steps",
        ]
    )

    # (b) Batched PyTorch loop.
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None:
        rows.append(["(b) batched PyTorch loop", "-", "-", "-", "torch not installed"])
    else:
        tdtype = torch.float64 if args.dtype == "float64" else torch.float32
        Z = torch.tensor(np.asarray(problem.Z), dtype=tdtype)
        y = torch.tensor(np.asarray(problem.y), dtype=tdtype)
        al = torch.tensor(np.asarray(alphas), dtype=tdtype)[:, None]
        to = torch.tensor(np.asarray(t_offs), dtype=tdtype)[:, None]

        def torch_run():
            m = torch.tensor(np.asarray(w0[0]), dtype=tdtype).repeat(K, 1)
            w = torch.tensor(np.asarray(w0[1]), dtype=tdtype).repeat(K, 1)
            decay = torch.empty_like(al)
            with torch.no_grad():
                for k in range(steps):
                    torch.mul(al, (k * lr < to).to(tdtype), out=decay)
                    residual = torch.addmm(-y, m * w, Z.T)  # (K, d)
                    grad = residual @ Z  # (K, n)
                    m_new = m - lr * (w * grad + decay * m)
                    w.sub_(lr * (m * grad + decay * w))
                    m = m_new
            return m * w

        start = time.perf_counter()
        theirs = torch_run()
        torch_s = time.perf_counter() - start
        diff = float(np.max(np.abs(theirs.numpy() - np.asarray(ours))))
        rows.append(
            [
                "(b) batched PyTorch loop",
                f"{torch_s:.2f}",
                f"{K * steps / torch_s:.3g}",
                f"{torch_s / ours_s:.2f}",
                f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
                f"max abs diff {diff:.1e}",
            ]
        )

    print(f"# Discrete training speed, {stamp()}, commit {git_revision()}")
    print(f"Machine: {machine()}")
    print(
        f"K = {K} SwitchOff configurations (alpha in [0, 0.1] x t_off in [10, 100]), "
        f"{steps} SGD steps, lr = {lr}, demo problem (n=100, d=40), {args.dtype}"
    )
    print()
    print(
        markdown_table(
            [
                "method",
                "time (s)",
                "steps x configs / s",
                "slower than jaxmirror",
                "note",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
