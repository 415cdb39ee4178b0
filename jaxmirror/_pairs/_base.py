r"""The abstract (g, h) pair: a reparameterization $x = g(w)$ and a regularizer $h(w)$."""

import abc

import equinox as eqx
from jaxtyping import ArrayLike

from .._custom_types import Params, Point, Scalar
from .._legendre import AbstractLegendre


class AbstractPair(eqx.Module):
    r"""A reparameterization $x = g(w)$ with the regularizer $h(w)$ that weight decay acts on.

    Gradient flow on the parameters with a schedule $\alpha_t$ is
    $$\dot w = -\nabla_w\big[f(g(w)) + \alpha_t\, h(w)\big].$$
    Writing `g` and `h` is all a new pair needs to run the parameter-space flow and the
    discrete optimizers; pairs with a closed-form Legendre function derive from
    `AbstractClosedFormPair` and also run the mirror and dual formulations.
    """

    @abc.abstractmethod
    def g(self, w: Params) -> Point:
        """The model point `x = g(w)`."""

    @abc.abstractmethod
    def h(self, w: Params) -> Scalar:
        """The regularizer `h(w)` (weight decay: half the squared norm)."""


class AbstractPenalisedPair(AbstractPair):
    r"""A pair whose induced penalty $\rho(x) = \min\{h(w) : g(w) = x\}$ is known.

    With constant weight decay $\alpha$ the flow tends to a minimiser of
    $f(x) + \alpha\rho(x)$ (for pairs whose stationary points are global), which
    `jm.implicit_bias` computes by proximal gradient.
    """

    @abc.abstractmethod
    def penalty(self, x: Point) -> Scalar:
        r"""$\rho(x) = \min\{h(w) : g(w) = x\}$ ($+\infty$ outside the range of g)."""

    @abc.abstractmethod
    def penalty_prox(self, z: Point, step: ArrayLike) -> Point:
        r"""$\operatorname{prox}_{\tau\rho}(z) = \arg\min_x \tau\rho(x) + \tfrac12|x-z|^2$."""


class AbstractClosedFormPair(AbstractPenalisedPair):
    r"""A pair whose time-varying Legendre function $R_a$ is known in closed form.

    For such pairs (commuting, regular parameterizations) $x_t = g(w_t)$ follows
    $\frac{d}{dt}\nabla R_{a_t}(x_t) = -\nabla f(x_t)$ with $a_t = -\int_0^t\alpha_s ds$.
    """

    @abc.abstractmethod
    def legendre(self, w0: Params) -> AbstractLegendre:
        """The time-varying Legendre function fixed by the initialisation `w0`."""
