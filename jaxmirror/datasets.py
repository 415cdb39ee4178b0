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


def _orthogonal(rng, n):
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    return q * np.sign(np.diag(r))[None, :]


def commuting_sensing(
    n: int = 10, d: int = 6, rank: int = 2, seed: int = 0, symmetric: bool = False
):
    r"""Commuting matrix sensing: $A_i = P\operatorname{diag}(a_i)Q^\top$, truth of rank `rank`.

    All measurements share the singular bases P, Q (Q = P when `symmetric`), so with an
    aligned initialisation the factorized flow is a diagonal pair on the singular values
    (eigenvalues). The truth $X^* = P\operatorname{diag}(\sigma^*)Q^\top$ has `rank`
    non-zero entries of size 1 to 2 (positive when `symmetric`).

    **Returns:** `(problem, X_star, P, Q)` with `X_star` of shape (n, n).
    """
    from ._problems import MatrixSensing

    if not (1 <= rank <= n and d >= 1):
        raise ValueError(
            f"`rank` must be in [1, n] and `d` >= 1, got rank={rank}, d={d}."
        )
    rng = np.random.default_rng(seed)
    P = _orthogonal(rng, n)
    Q = P if symmetric else _orthogonal(rng, n)
    a = rng.standard_normal((d, n)) / np.sqrt(d)
    A = np.einsum("ik,dk,jk->dij", P, a, Q)
    sigma = np.zeros(n)
    sigma[rng.choice(n, rank, replace=False)] = 1.0 + rng.uniform(size=rank)
    if not symmetric:
        sigma *= rng.choice([-1.0, 1.0], size=n)
    X_star = (P * sigma[None, :]) @ Q.T
    y = np.einsum("dij,ij->d", A, X_star)
    return MatrixSensing(jnp.asarray(A), jnp.asarray(y)), X_star, P, Q


def gaussian_sensing(
    n1: int = 20, n2: int = 20, d: int = 120, rank: int = 2, seed: int = 0
):
    r"""Gaussian matrix sensing: $A_i$ with i.i.d. $N(0, 1/d)$ entries, a rank-`rank` truth
    $X^* = L R^\top / \sqrt{\text{rank}}$ with Gaussian factors.

    **Returns:** `(problem, X_star)` with `X_star` of shape (n1, n2).
    """
    from ._problems import MatrixSensing

    rng = np.random.default_rng(seed)
    A = rng.standard_normal((d, n1, n2)) / np.sqrt(d)
    X_star = (
        rng.standard_normal((n1, rank))
        @ rng.standard_normal((rank, n2))
        / np.sqrt(rank)
    )
    y = np.einsum("dij,ij->d", A, X_star)
    return MatrixSensing(jnp.asarray(A), jnp.asarray(y)), X_star


GENERATORS = {
    "sparse_regression": sparse_regression,
    "commuting_sensing": commuting_sensing,
    "gaussian_sensing": gaussian_sensing,
}
"""The generated problems by the name a configuration file gives them."""
