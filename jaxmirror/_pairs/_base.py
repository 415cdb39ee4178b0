r"""The abstract (g, h) pair and the capabilities a pair can declare.

Every pair is an `AbstractPair`: a reparameterization $x = g(w)$, the regularizer
$h(w)$ that weight decay acts on, and `init`, with one signature for every pair. What
else a pair can do is declared by deriving from a capability base, never guessed:

| capability | base | used by |
|---|---|---|
| induced penalty and its prox | `AbstractPenalisedPair` | `implicit_bias` under constant weight decay |
| closed-form time-varying Legendre function | `AbstractClosedFormPair` | the mirror, dual and row-space formulations, `implicit_bias` after a switch-off |
| weight decay changes only the clock | `AbstractClockOnlyPair` | `implicit_bias` for every schedule |
| exact discrete mirror descent | `AbstractMirrorDescentPair` | `mirror_descent_step`, `discrete_implicit_bias` |
| matrix point, commuting reduction | `AbstractMatrixPair` | `implicit_bias` for matrix sensing |

Code that needs a capability tests `isinstance` against its base and otherwise raises
an error that names the capability (`require`).
"""

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from .._custom_types import Params, Point, Scalar
from .._legendre import AbstractLegendre


class AbstractPair(eqx.Module):
    r"""A reparameterization $x = g(w)$ with the regularizer $h(w)$ that weight decay acts on.

    Gradient flow on the parameters with a schedule $\alpha_t$ is
    $$\dot w = -\nabla_w\big[f(g(w)) + \alpha_t\, h(w)\big].$$
    Writing `g`, `h` and `init` is all a new pair needs to run the parameter-space flow
    and the discrete optimizers; capability bases (see the module docstring) add the
    closed forms that the other formulations and the predictions need.
    """

    @abc.abstractmethod
    def g(self, w: Params) -> Point:
        """The model point `x = g(w)`."""

    @abc.abstractmethod
    def h(self, w: Params) -> Scalar:
        """The regularizer `h(w)` (weight decay: half the squared norm)."""

    @abc.abstractmethod
    def init(
        self,
        x0: ArrayLike | None = None,
        scale: ArrayLike | None = None,
        *,
        key: PRNGKeyArray | None = None,
    ) -> Params:
        r"""Initial parameters $w_0$ with $g(w_0) = x_0$, at the pair's initial `scale`.

        The same signature for every pair:

        - `x0`: the initial model point, shape `(n,)`; pairs that draw their
          parameters at random (the matrix pairs) take `None` (or zeros).
        - `scale`: the free size of the initialisation once $x_0$ is fixed (each pair
          documents its meaning and default; `None` where the pair has no free scale).
        - `key`: a PRNG key, only for pairs that draw random parameters.
        """

    def check_parameters(self, w0: Params) -> Params:
        """`w0`, checked against the pair's domain (the default accepts any finite w0);
        raises a `ValueError` naming `w0`, through `eqx.error_if` when traced."""
        return w0


class AbstractPenalisedPair(AbstractPair):
    r"""A pair whose induced penalty $\rho(x) = \min\{h(w) : g(w) = x\}$ is known.

    With constant weight decay $\alpha$ the flow tends to a minimiser of
    $f(x) + \alpha\rho(x)$ (for pairs whose stationary points are global), which
    `jm.implicit_bias` computes by proximal gradient.
    """

    def penalised_limit_unavailable(self) -> str | None:
        """Why this instance's constant-weight-decay limit is not the penalised minimiser
        (for pairs whose configuration decides it), or None (the default)."""
        return None

    @abc.abstractmethod
    def penalty(self, x: Point) -> Scalar:
        r"""$\rho(x) = \min\{h(w) : g(w) = x\}$ ($+\infty$ outside the range of g)."""

    @abc.abstractmethod
    def penalty_prox(self, z: Point, step: ArrayLike) -> Point:
        r"""$\operatorname{prox}_{\tau\rho}(z) = \arg\min_x \tau\rho(x) + \tfrac12|x-z|^2$."""


class AbstractClosedFormPair(AbstractPair):
    r"""A pair whose time-varying Legendre function $R_a$ is known in closed form.

    For such pairs (commuting, regular parameterizations) $x_t = g(w_t)$ follows
    $\frac{d}{dt}\nabla R_{a_t}(x_t) = -\nabla f(x_t)$ with $a_t = -\int_0^t\alpha_s ds$.
    """

    @abc.abstractmethod
    def legendre(self, w0: Params) -> AbstractLegendre:
        """The time-varying Legendre function fixed by the initialisation `w0`."""

    def dual_amplification(self, w0, a) -> float:
        r"""`AbstractLegendre.dual_amplification` of this pair's Legendre function
        for the initialisation `w0`, at Legendre time `a`, eagerly: where it is
        large, `formulation="auto"` does not integrate $\theta$. Default 1 (the
        closed forms without cancellation), without building the function."""
        return 1.0


class AbstractClockOnlyPair(AbstractClosedFormPair):
    r"""A closed-form pair whose Legendre function does not depend on $a$: weight decay
    changes only the clock, $\frac{d}{dt}\nabla R(x_t) = -\kappa(a_t)\nabla f(x_t)$.

    Where the flow interpolates, its limit is then the same for every schedule (the
    Bregman projection of $x_0$ onto $\{Zx = y\}$ in $R$), which `implicit_bias`
    computes for constant weight decay too.
    """


class AbstractMirrorDescentPair(AbstractClosedFormPair):
    r"""A closed-form pair on which gradient descent is exactly a mirror descent.

    One step of `add_decayed_weights(lam)` + `sgd(eta)` maps the mirror coordinate and
    the (per-coordinate) Legendre time as
    $\theta' = \theta - \beta - \rho(\beta)$, $a' = a + \log(1 - \eta\lambda) + \gamma(\beta)$
    with $\beta = \eta\nabla f(x)/(1 - \eta\lambda)$ (see `jm.mirror_descent_step`).
    """

    @abc.abstractmethod
    def remainder_and_gain(self, beta: Point) -> tuple[Point, Point]:
        r"""The step's nonlinear remainder $\rho(\beta)$ and gain $\gamma(\beta)$."""


class AbstractMatrixPair(AbstractPenalisedPair):
    r"""A pair whose model point is a matrix $X$ of shape `matrix_shape`, flattened.

    $x = \operatorname{vec}(X)$ (row-major), so problems, `solve`, `train` and sweeps
    work on it as on any vector. Matrix pairs do not commute in general; with commuting
    measurements and an aligned initialisation they reduce exactly to a diagonal pair
    (`commuting_reduction`), which `jm.implicit_bias` uses.
    """

    @property
    @abc.abstractmethod
    def matrix_shape(self) -> tuple[int, int]:
        """The shape (n1, n2) of the matrix X."""

    @property
    @abc.abstractmethod
    def factor_shapes(self):
        """The shape of each of one point's factors, in the order of the parameters'
        leaves (a sweep's batched parameters carry one more, leading axis on each)."""

    def matrix(self, x: Array) -> Array:
        """The matrix X from the flattened model point x (leading axes kept)."""
        return jnp.reshape(x, x.shape[:-1] + tuple(self.matrix_shape))

    @abc.abstractmethod
    def init_aligned(self, basis: ArrayLike, scale: ArrayLike = 1.0) -> Params:
        """Factors aligned with a basis of the measurements (see `commuting_reduction`)."""

    @abc.abstractmethod
    def commuting_reduction(self, problem, w0: Params, tol: float = 1e-9):
        """The exact reduction to a diagonal pair, or a clear error if none exists."""


def require(pair, capability: type, what: str) -> None:
    """Raise a `ValueError` naming the missing capability unless `pair` declares it."""
    if not isinstance(pair, capability):
        raise ValueError(
            f"`pair`: {what} needs a pair with the capability `{capability.__name__}`; "
            f"{type(pair).__name__} does not declare it."
        )
