r"""Matrix factorization pairs: $X = UV^\top$ and $X = UU^\top$ with Frobenius weight decay.

The model point is the flattened matrix, $x = \operatorname{vec}(X)$ (row-major), so every
part of jaxmirror that works on vectors (problems, `solve`, `train`, sweeps) works on
them; `pair.matrix(x)` reshapes.

These pairs do not commute in general (check with `jm.lie_brackets`), so they have no
closed-form Legendre function; but with commuting measurements and an aligned
initialisation the dynamics reduce exactly to a diagonal pair on the singular values
(docs/theory.md, section 6), which `commuting_reduction` exposes and `jm.implicit_bias` uses.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checking import as_float_array, check_positive, is_prng_key
from .._problems import LeastSquares, MatrixSensing
from ._base import AbstractMatrixPair
from ._hadamard import Hadamard
from ._square import Square


def _check_rank(shape, rank, allow_overparameterized):
    if not (isinstance(rank, int | np.integer) and rank >= 1):
        raise ValueError(f"`rank` must be an int >= 1, got {rank!r}.")
    if rank > min(shape) and not allow_overparameterized:
        raise ValueError(
            f"`rank` = {rank} exceeds min(shape) = {min(shape)}; pass "
            "allow_overparameterized=True to use wider factors on purpose."
        )


def _random_factor_key(pair, x0, key):
    """Check the arguments of a random factor initialisation; return the key."""
    if is_prng_key(x0):
        raise ValueError(
            f"`x0` must be None (factors drawn around X = 0), got a PRNG key; pass it as "
            f"`{type(pair).__name__}(...).init(key=key, scale=...)`."
        )
    if x0 is not None and not bool(np.all(np.asarray(x0) == 0)):
        raise ValueError(
            f"`x0` must be None or zero for {type(pair).__name__}.init, which draws small "
            "random factors around X = 0; for prescribed factors aligned with the "
            "measurements use `init_aligned`."
        )
    if key is None:
        raise ValueError(
            f"`key` is required: {type(pair).__name__}.init draws random factors "
            "(pass key=jax.random.PRNGKey(seed))."
        )
    return key


def _check_measurements(pair, problem):
    if not isinstance(problem, MatrixSensing):
        raise ValueError("`problem` must be a jm.MatrixSensing for this reduction.")
    problem.check_shape(pair.matrix_shape)


def _svt(z, step):
    """Singular-value soft thresholding: the prox of step * nuclear norm."""
    u, s, vt = jnp.linalg.svd(z, full_matrices=False)
    return (u * jnp.maximum(s - step, 0.0)[None, :]) @ vt


@dataclasses.dataclass(frozen=True)
class CommutingReduction:
    """The exact reduction of a matrix pair to a diagonal pair (see `commuting_reduction`).

    `problem`, `pair`, `w0` define the diagonal flow on the aligned singular (or eigen)
    values; `lift(z)` maps its point back to the flattened matrix.
    """

    problem: LeastSquares
    pair: object
    w0: object
    left: np.ndarray
    right: np.ndarray
    index: np.ndarray

    def aligned_bases(self) -> tuple[jax.Array, jax.Array]:
        """The left and right basis vectors the factor columns live on, one column
        each: `left[:, index]`, `right[:, index]`."""
        left, right = self.left[:, self.index], self.right[:, self.index]
        return jnp.asarray(left), jnp.asarray(right)

    def lift(self, z):
        """The flattened matrix whose aligned diagonal entries are `z`."""
        return lift_diagonal(*self.aligned_bases(), z)


def lift_diagonal(left, right, z):
    r"""$\operatorname{vec}(L\,\mathrm{diag}(z)R^\top)$: the matrix with singular (or
    eigen) values `z` on the aligned basis vectors `left`, `right` (one column each;
    distinct, as `_aligned_columns` makes them)."""
    return ((left * z[None, :]) @ right.T).reshape(-1)


def _single_support(column, tol):
    """The one index where `column` lives (None if it is zero), or -1 if spread."""
    mags = np.abs(column)
    top = int(np.argmax(mags))
    if mags[top] == 0:
        return None
    return top if np.delete(mags, top).max(initial=0.0) <= tol * mags[top] else -1


def _aligned_columns(u_in_basis, v_in_basis, tol):
    """For each factor column, the single basis index both factors live on (or raise)."""
    m = min(u_in_basis.shape[0], v_in_basis.shape[0])
    index = []
    for k in range(u_in_basis.shape[1]):
        iu = _single_support(u_in_basis[:, k], tol)
        iv = _single_support(v_in_basis[:, k], tol)
        found = {i for i in (iu, iv) if i is not None}
        if len(found) != 1 or -1 in found or next(iter(found)) >= m:
            raise ValueError(
                "`w0`: the initialisation is not aligned with the measurements' common "
                f"basis (factor column {k} is not on a single shared basis vector)."
            )
        index.append(found.pop())
    if len(set(index)) != len(index):
        raise ValueError(
            "`w0`: two factor columns share one basis vector; not aligned."
        )
    return np.array(index)


def _common_basis(A, symmetric, tol):
    """Left/right bases diagonalising every measurement, or raise if they do not commute."""
    rng = np.random.default_rng(0)
    mix = np.tensordot(rng.standard_normal(A.shape[0]), A, axes=1)
    if symmetric:
        _, left = np.linalg.eigh(mix)
        right = left
    else:
        left, _, right_t = np.linalg.svd(mix)
        right = right_t.T
    # L^T A_d R for every measurement, as two GEMMs (a three-operand einsum loops
    # over all four indices: 174 ms against 1.6 ms at 30 measurements of 50 x 50).
    rotated = left.T @ A @ right
    diagonal = np.einsum("dii->di", rotated)
    off = rotated.copy()
    for i in range(min(off.shape[1:])):
        off[:, i, i] = 0.0
    if np.max(np.abs(off)) > tol * max(np.max(np.abs(A)), 1e-300):
        raise ValueError(
            "`problem`: the measurements do not share a common (singular) basis, so the "
            "flow has no closed-form reduction. Use a constant schedule (nuclear-norm "
            "limit) or simulate with jm.solve(formulation='parameter')."
        )
    return left, right, diagonal


class MatrixFactorization(AbstractMatrixPair):
    r"""The pair $X = UV^\top$ ($U$: n1 x r, $V$: n2 x r), $h = \tfrac12(|U|_F^2 + |V|_F^2)$.

    Parameters are the tuple `(U, V)`; $x = \operatorname{vec}(X)$. The induced penalty is
    the nuclear norm, $\min\{h : UV^\top = X\} = |X|_*$ (for rank $\ge$ rank X), so constant
    weight decay biases towards $\arg\min f(X) + \alpha|X|_*$.

    **Arguments:**

    - `shape`: `(n1, n2)`.
    - `rank`: the inner dimension r >= 1 (at most min(shape) unless
      `allow_overparameterized=True`).
    """

    shape: tuple[int, int] = eqx.field(static=True)
    rank: int = eqx.field(static=True)

    def __init__(self, shape, rank, allow_overparameterized: bool = False):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"`shape` must be (n1, n2) with n1, n2 >= 1, got {shape}.")
        _check_rank(shape, rank, allow_overparameterized)
        self.shape = shape
        self.rank = int(rank)

    def g(self, w):
        U, V = w
        return (U @ V.T).reshape(-1)

    def h(self, w):
        U, V = w
        return 0.5 * (jnp.sum(U**2) + jnp.sum(V**2))

    @property
    def matrix_shape(self):
        return self.shape

    @property
    def factor_shapes(self):
        n1, n2 = self.shape
        return ((n1, self.rank), (n2, self.rank))

    def init(self, x0=None, scale=1e-2, *, key=None):
        """Small random factors around X = 0: entries N(0, scale^2).

        **Arguments:**

        - `x0`: `None` (or zeros): the factors are drawn around X = 0.
        - `scale`: the entries' standard deviation, > 0 (default 1e-2).
        - `key`: the PRNG key (required).
        """
        key = _random_factor_key(self, x0, key)
        scale = check_positive("scale", as_float_array(scale, "scale"))
        ku, kv = jax.random.split(key)
        n1, n2 = self.shape
        return (
            scale * jax.random.normal(ku, (n1, self.rank), scale.dtype),
            scale * jax.random.normal(kv, (n2, self.rank), scale.dtype),
        )

    def init_aligned(self, basis, scale=1.0):
        r"""$U_0 = $ scale $\cdot$ basis[:, :r], $V_0 = 0$: aligned, with $X_0 = 0$.

        With commuting measurements diagonal in (`basis`, any right basis), the flow is
        the Hadamard pair on the diagonal with $m_0 = $ scale, $w_0 = 0$.
        """
        scale = check_positive("scale", as_float_array(scale, "scale"))
        basis = as_float_array(basis, "basis")
        return (
            scale * basis[:, : self.rank],
            jnp.zeros((self.shape[1], self.rank), basis.dtype),
        )

    def penalty(self, x):
        return jnp.sum(jnp.linalg.svd(self.matrix(x), compute_uv=False))

    def penalty_prox(self, z, step):
        return _svt(self.matrix(z), step).reshape(-1)

    def commuting_reduction(self, problem, w0, tol=1e-9) -> CommutingReduction:
        """Reduce to `Hadamard` on the aligned singular values, or raise a clear error."""
        _check_measurements(self, problem)
        A = np.asarray(problem.A)
        left, right, diagonal = _common_basis(A, symmetric=False, tol=tol)
        U, V = (np.asarray(f) for f in w0)
        u_b, v_b = left.T @ U, right.T @ V
        index = _aligned_columns(u_b, v_b, tol)
        cols = np.arange(len(index))
        m0, v0 = u_b[index, cols], v_b[index, cols]
        reduced = LeastSquares(jnp.asarray(diagonal[:, index]), problem.y)
        return CommutingReduction(
            reduced, Hadamard(), (jnp.asarray(m0), jnp.asarray(v0)), left, right, index
        )


class SymmetricFactorization(AbstractMatrixPair):
    r"""The pair $X = UU^\top$ ($U$: n x r), $h = \tfrac12|U|_F^2$ (so $X \succeq 0$).

    Parameters are the array `U`; $x = \operatorname{vec}(X)$. The induced penalty is the
    trace on PSD matrices ($+\infty$ elsewhere). With symmetric commuting measurements
    and an aligned initialisation the flow is the `Square` pair on the eigenvalues.

    **Arguments:**

    - `n`: the matrix size.
    - `rank`: r >= 1 (at most n unless `allow_overparameterized=True`).
    """

    n: int = eqx.field(static=True)
    rank: int = eqx.field(static=True)

    def __init__(self, n, rank, allow_overparameterized: bool = False):
        if not (isinstance(n, int | np.integer) and n >= 1):
            raise ValueError(f"`n` must be an int >= 1, got {n!r}.")
        _check_rank((n, n), rank, allow_overparameterized)
        self.n = int(n)
        self.rank = int(rank)

    def g(self, w):
        return (w @ w.T).reshape(-1)

    def h(self, w):
        return 0.5 * jnp.sum(w**2)

    @property
    def matrix_shape(self):
        return (self.n, self.n)

    @property
    def factor_shapes(self):
        return ((self.n, self.rank),)

    def init(self, x0=None, scale=1e-2, *, key=None):
        """A small random factor around X = 0: entries N(0, scale^2).

        **Arguments:**

        - `x0`: `None` (or zeros): the factor is drawn around X = 0.
        - `scale`: the entries' standard deviation, > 0 (default 1e-2).
        - `key`: the PRNG key (required).
        """
        key = _random_factor_key(self, x0, key)
        scale = check_positive("scale", as_float_array(scale, "scale"))
        return scale * jax.random.normal(key, (self.n, self.rank), scale.dtype)

    def init_aligned(self, basis, scale=1.0):
        r"""$U_0 = $ scale $\cdot$ basis[:, :r]: $X_0 = $ scale$^2 \sum_{k<r} q_k q_k^\top$."""
        scale = check_positive("scale", as_float_array(scale, "scale"))
        return scale * as_float_array(basis, "basis")[:, : self.rank]

    def penalty(self, x):
        X = self.matrix(x)
        eigenvalues = jnp.linalg.eigvalsh(0.5 * (X + X.T))
        return jnp.where(jnp.all(eigenvalues >= -1e-12), jnp.trace(X), jnp.inf)

    def penalty_prox(self, z, step):
        Z = self.matrix(z)
        eigenvalues, vectors = jnp.linalg.eigh(0.5 * (Z + Z.T))
        shrunk = jnp.maximum(eigenvalues - step, 0.0)
        return ((vectors * shrunk[None, :]) @ vectors.T).reshape(-1)

    def commuting_reduction(self, problem, w0, tol=1e-9) -> CommutingReduction:
        """Reduce to `Square` on the aligned eigenvalues, or raise a clear error."""
        _check_measurements(self, problem)
        A = np.asarray(problem.A)
        if not np.allclose(A, np.swapaxes(A, 1, 2)):
            raise ValueError(
                "`problem`: SymmetricFactorization needs symmetric measurements."
            )
        basis, _, diagonal = _common_basis(A, symmetric=True, tol=tol)
        U = np.asarray(w0)
        u_b = basis.T @ U
        index = _aligned_columns(u_b, np.zeros_like(u_b), tol)
        w_diag = u_b[index, np.arange(len(index))]
        reduced = LeastSquares(jnp.asarray(diagonal[:, index]), problem.y)
        return CommutingReduction(
            reduced, Square(), jnp.asarray(w_diag), basis, basis, index
        )
