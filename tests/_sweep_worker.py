"""Run a small sweep in a fresh process (device count and several processes need one)."""

import argparse
import os


parser = argparse.ArgumentParser()
parser.add_argument("--devices", type=int, default=1)
parser.add_argument("--strategy", default="vmap")
parser.add_argument("--backend", default="xla")
parser.add_argument("--out", default=None)
parser.add_argument("--save", required=True)
parser.add_argument("--chunk-size", type=int, default=8)
parser.add_argument("--solver", default="Tsit5", help="a diffrax solver's name")
parser.add_argument(
    "--processes", type=int, default=1, help="jax.distributed processes"
)
parser.add_argument("--process-id", type=int, default=0)
parser.add_argument("--port", type=int, default=0, help="the coordinator's port")
args = parser.parse_args()
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"

import jax


jax.config.update("jax_enable_x64", True)
if args.processes > 1:
    # Several "hosts" on one machine: JAX's own distributed runtime, CPU collectives
    # over gloo; each process holds `devices` of the global devices.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"localhost:{args.port}",
        num_processes=args.processes,
        process_id=args.process_id,
    )

import diffrax
import jax.numpy as jnp
import numpy as np

import jaxmirror as jm


assert len(jax.devices()) == args.devices * args.processes
problem, x_star = jm.datasets.sparse_regression(n=30, d=12, sparsity=3, seed=4)
pair = jm.Hadamard()
w0 = pair.init(jnp.zeros(30), scale=1.0)
schedules = jm.SwitchOff(
    **jm.grid(alpha=np.linspace(0, 0.2, 6), t_off=np.linspace(1, 10, 6))
)
ds = jm.sweep(
    problem,
    pair,
    schedules,
    w0,
    50.0,
    truth=x_star,
    strategy=args.strategy,
    backend=args.backend,
    chunk_size=args.chunk_size,
    out=args.out,
    progress=False,
    rtol=1e-10,
    atol=1e-12,
    solver=getattr(diffrax, args.solver)(),
)
np.savez(
    args.save,
    x_final=ds.x_final.values,
    x_predicted=ds.x_predicted.values,
    status=ds.status.values,
)
