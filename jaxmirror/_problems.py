r"""Losses $f(x)$ on the model point $x$."""

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._checking import as_float_array, check, check_finite
from ._custom_types import Point, Scalar


class AbstractProblem(eqx.Module):
    """A smooth loss `f(x)` with its gradient."""

    @abc.abstractmethod
    def loss(self, x: Point) -> Scalar:
        """The loss `f(x)`."""

    @abc.abstractmethod
    def grad(self, x: Point) -> Point:
        """The gradient of `f` at `x`."""

    @abc.abstractmethod
    def dim(self) -> int | None:
        """The dimension n of x, or None where the problem does not fix it."""


class AbstractLinearProblem(AbstractProblem):
    r"""A loss of the predictions only: $f(x) = \phi(Dx)$ for a design matrix $D$ (d x n).

    Then $\nabla f(x) = D^\top \nabla\phi(Dx)$ lies in the row space of $D$, so the
    mirror coordinate moves in a d-dimensional affine space; the row-space formulation
    (`jm.RowSpaceFormulation`) integrates those d coordinates. A subclass implements
    `design`, `prediction_grad`, `prediction_lipschitz` (a Lipschitz constant of
    $\nabla\phi$, which the constant-weight-decay limit of `jm.implicit_bias` needs),
    `loss` and `dim`.
    """

    @abc.abstractmethod
    def design(self) -> Float[Array, "d n"]:
        """The design matrix D."""

    @abc.abstractmethod
    def prediction_grad(self, z: Float[Array, " d"]) -> Float[Array, " d"]:
        r"""$\nabla\phi(z)$ at the predictions $z = Dx$."""

    @abc.abstractmethod
    def prediction_lipschitz(self) -> float:
        r"""A Lipschitz constant of $\nabla\phi$ (1 for least squares, 1/4 for logistic)."""

    def lipschitz(self) -> Scalar:
        r"""A Lipschitz constant of $\nabla f$: $L_\phi \|D\|_2^2$."""
        return self.prediction_lipschitz() * jnp.linalg.norm(self.design(), ord=2) ** 2

    def predict(self, x: Point) -> Float[Array, " d"]:
        """The predictions $Dx$."""
        # x @ D.T rather than D @ x: under vmap the batch axis then leads, and the
        # batched products are plain GEMMs with no transposes (benchmarks/RESULTS.md).
        return x @ self.design().T

    def grad(self, x):
        return self.prediction_grad(self.predict(x)) @ self.design()


class AbstractDataProblem(AbstractLinearProblem):
    r"""A loss of the predictions $Dx$ against targets $y$, one per row of $D$.

    Its arrays may carry a leading configuration axis: a stack of K instances, built
    by mapping the constructor (`eqx.filter_vmap(jm.LeastSquares)(Zs, ys)`), which
    `jm.sweep` solves one per configuration (`stack_size`). A subclass declares the
    targets `y` as a field.
    """

    y: eqx.AbstractVar[Float[Array, " d"]]

    def stack_size(self) -> int | None:
        """K for a stack of K instances (targets of shape `(K, d)`), else None."""
        return self.y.shape[0] if self.y.ndim == 2 else None


class AbstractLeastSquares(AbstractDataProblem):
    r"""Least squares in the predictions: $f(x) = \tfrac12 |Dx - y|^2$ (a sum).

    A fit that can interpolate ($Dx = y$ has solutions when $D$ has full row rank
    and d <= n), so a schedule that switches off has a predicted limit
    (`jm.implicit_bias`), and whose gradient $D^\top(Dx - y)$ the fused kernels
    compute from a resident design (`backend="pallas"`).
    """

    def residual(self, x: Point) -> Float[Array, " d"]:
        """The residual $Dx - y$."""
        return self.predict(x) - self.y

    def prediction_grad(self, z):
        return z - self.y

    def loss(self, x):
        r = self.residual(x)
        return 0.5 * jnp.dot(r, r)

    def prediction_lipschitz(self):
        return 1.0

    def can_interpolate(self) -> bool:
        """Whether there are at most as many measurements as unknowns (d <= n)."""
        return self.y.shape[-1] <= self.dim()


def _design(Z, y, name_y="y"):
    Z = as_float_array(Z, "Z")
    y = as_float_array(y, "y")
    if Z.ndim != 2:
        raise ValueError(f"`Z` must be a matrix of shape (d, n), got shape {Z.shape}.")
    if y.shape != (Z.shape[0],):
        raise ValueError(
            f"`{name_y}` must have shape (d,) = ({Z.shape[0]},) to match `Z` of shape "
            f"{Z.shape}, got shape {y.shape}."
        )
    return check_finite("Z", Z), check_finite(name_y, y)


class LeastSquares(AbstractLeastSquares):
    r"""Least squares $f(x) = \tfrac12 |Zx - y|^2$ (a sum, not a mean).

    **Arguments:**

    - `Z`: the design matrix, shape `(d, n)`.
    - `y`: the targets, shape `(d,)`.
    """

    Z: Float[Array, "d n"]
    y: Float[Array, " d"]

    def __init__(self, Z, y):
        self.Z, self.y = _design(Z, y)

    def design(self):
        return self.Z

    def dim(self):
        return self.Z.shape[-1]


class Logistic(AbstractDataProblem):
    r"""Logistic loss $f(x) = \sum_i \log(1 + e^{-y_i (Zx)_i})$, labels $y_i \in \{-1, 1\}$.

    **Arguments:**

    - `Z`: the features, shape `(d, n)`.
    - `y`: labels in {-1, +1}, shape `(d,)`.
    """

    Z: Float[Array, "d n"]
    y: Float[Array, " d"]

    def __init__(self, Z, y):
        Z, y = _design(Z, y)
        self.Z = Z
        self.y = check("y", y, lambda v: (v == 1) | (v == -1), "labels in {-1, +1}")

    def design(self):
        return self.Z

    def loss(self, x):
        return jnp.sum(jnp.logaddexp(0.0, -self.y * self.predict(x)))

    def prediction_grad(self, z):
        return -self.y * jax.nn.sigmoid(-self.y * z)

    def dim(self):
        return self.Z.shape[-1]

    def prediction_lipschitz(self):
        return 0.25


class MatrixSensing(AbstractLeastSquares):
    r"""Matrix sensing $f(X) = \tfrac12\sum_i (\langle A_i, X\rangle - y_i)^2$ on $x = \operatorname{vec}(X)$.

    **Arguments:**

    - `A`: the measurement matrices, shape `(d, n1, n2)`.
    - `y`: the measurements, shape `(d,)`.
    """

    A: Float[Array, "d n1 n2"]
    y: Float[Array, " d"]

    def __init__(self, A, y):
        A = as_float_array(A, "A")
        if A.ndim != 3:
            raise ValueError(f"`A` must have shape (d, n1, n2), got shape {A.shape}.")
        self.A = check_finite("A", A)
        _, self.y = _design(A.reshape(A.shape[0], -1), y)

    @property
    def shape(self) -> tuple[int, int]:
        """The shape (n1, n2) of the matrices measured (the last two axes of `A`, so
        that a batch of problems, as `jm.sweep` takes, has it too)."""
        return self.A.shape[-2:]

    def design(self):
        """The measurements as a d x (n1 n2) matrix acting on vec(X)."""
        return self.A.reshape(self.A.shape[0], -1)

    def dim(self):
        return self.A.shape[-2] * self.A.shape[-1]

    def check_shape(self, shape) -> None:
        """Raise a `ValueError` unless the measured matrices have shape `shape`."""
        if tuple(shape) != tuple(self.shape):
            raise ValueError(
                f"`problem`: measurements of shape {tuple(self.shape)} do not match the "
                f"pair's matrix shape {tuple(shape)}."
            )


class Problem(AbstractProblem):
    """Any user loss: a callable `fn(x) -> scalar`, differentiated by JAX.

    **Arguments:**

    - `fn`: the loss, a JAX-traceable function of `x`.
    - `n`: optional dimension of `x`, used to check shapes before solving.
    """

    fn: Callable[[Point], Scalar]
    n: int | None = eqx.field(static=True, default=None)

    def loss(self, x):
        return self.fn(x)

    def grad(self, x):
        return jax.grad(self.fn)(x)

    def dim(self):
        return self.n


def as_problem(problem) -> AbstractProblem:
    """Accept an `AbstractProblem` or wrap a plain callable in `Problem`."""
    if isinstance(problem, AbstractProblem):
        return problem
    if callable(problem):
        return Problem(problem)
    raise TypeError(
        "`problem` must be a jaxmirror problem (e.g. `jm.LeastSquares(Z, y)`) or a "
        f"callable f(x) -> scalar, got {type(problem).__name__}."
    )
