"""The GEMM shapes of one batched gradient step, JAX vs PyTorch, side by side.

2,000 products (K x n) @ (n x d) with K = 1024, n = 100, d = 40, dispatched one by one
(the torch loop's pattern) and inside one `lax.scan` (jaxmirror's pattern).

    python benchmarks/gemm_vs_torch.py [--dtype float32]
"""

import argparse
import time

import jax
import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", args.dtype == "float64")
    import jax.numpy as jnp
    from _common import machine, markdown_table, min_time, stamp

    K, n, d, calls = 1024, 100, 40, 2000
    rng = np.random.default_rng(0)
    a_np = rng.standard_normal((K, n)).astype(args.dtype)
    z_np = rng.standard_normal((n, d)).astype(args.dtype)
    a, z = jnp.asarray(a_np), jnp.asarray(z_np)
    product = jax.jit(lambda a: a @ z)

    def dispatched():
        for _ in range(calls):
            out = product(a)
        return out

    @jax.jit
    def scanned(a):
        def body(carry, _):
            return carry + 1e-9 * (carry @ z) @ z.T, None

        return jax.lax.scan(body, a, None, length=calls // 2)[0]

    dispatched()
    scanned(a).block_until_ready()
    rows = [
        ["JAX, jitted product per call", f"{min_time(dispatched, 3):.3f}"],
        [
            "JAX, lax.scan (two products per step)",
            f"{min_time(lambda: scanned(a), 3):.3f}",
        ],
    ]
    try:
        import torch

        at, zt = torch.tensor(a_np), torch.tensor(z_np)
        start = time.perf_counter()
        for _ in range(calls):
            at @ zt
        rows.append(
            [
                f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
                f"{time.perf_counter() - start:.3f}",
            ]
        )
    except ImportError:
        rows.append(["torch", "not installed"])
    print(f"# {calls} GEMMs ({K}x{n}) @ ({n}x{d}), {args.dtype}, {stamp()}")
    print(f"Machine: {machine()}")
    print()
    print(markdown_table(["method", "seconds"], rows))


if __name__ == "__main__":
    main()
