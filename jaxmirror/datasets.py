"""Synthetic problem instances used by the demo, tests and benchmarks."""

import jax.numpy as jnp
import numpy as np

from ._problems import LeastSquares


def sparse_regression(
    n: int = 100, d: int = 40, sparsity: int = 5, seed: int = 0, noise: float = 0.0
) -> tuple[LeastSquares, np.ndarray]:
    r"""A sparse-recovery instance: $y = Z x^* (+\text{noise})$, $Z_{ij}\sim N(0, 1/d)$.

    The truth $x^*$ has `sparsity` non-zero entries drawn from $N(0, 1)$ plus a sign-keeping
    offset of 1 (so no entry is tiny). Generated with NumPy's PCG64 from `seed`, so the
    instance is the same on every machine.

    **Returns:** `(problem, x_star)`.
    """
    if not (0 < sparsity <= n and d > 0):
        raise ValueError(
            f"`sparsity` must be in [1, n] and `d` > 0, got sparsity={sparsity}, "
            f"n={n}, d={d}."
        )
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((d, n)) / np.sqrt(d)
    x_star = np.zeros(n)
    support = rng.choice(n, size=sparsity, replace=False)
    values = rng.standard_normal(sparsity)
    x_star[support] = values + np.sign(values)
    y = Z @ x_star + noise * rng.standard_normal(d)
    return LeastSquares(jnp.asarray(Z), jnp.asarray(y)), x_star
