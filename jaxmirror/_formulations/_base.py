r"""What a formulation of the regularized gradient flow is: an ODE with a readout of x.

The flow $\dot w = -\nabla_w[f(g(w)) + \alpha_t h(w)]$, $x_t = g(w_t)$, can be
integrated in several equivalent coordinates. A formulation owns everything one choice
needs, so that `jm.solve` and `jm.sweep` integrate any of them along one path:

- which problems and pairs it accepts (`unsupported`, with the reason);
- its initial state and the arrays its field needs (`init`, computed once per solve);
- its vector field (`field`, diffrax's `(t, y, args)` with the problem apart);
- its readout of x (`point`) and of w where it has one (`parameters`).

The problem is passed apart from the other arguments so that a batch of
configurations can share it: under `vmap` the products with its design matrix are then
matrix-matrix products (GEMMs).
"""

import abc
from typing import Any

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import PyTree

from .._custom_types import Params, Point


class AbstractFormulation(eqx.Module):
    r"""One way of writing the regularized gradient flow as an ODE, $\dot y = F(t, y)$.

    Pass an instance (or its `name`) to `jm.solve(..., formulation=...)` and
    `jm.sweep`, as a solver object is passed to diffrax. A new formulation is one
    subclass implementing the abstract methods below.
    """

    name: eqx.AbstractClassVar[str]
    # Whether the state comes to rest at an isolated point once the flow has converged
    # (an invertible Jacobian there), so that diffrax's ImplicitAdjoint applies.
    isolated_limit: eqx.AbstractClassVar[bool]

    @abc.abstractmethod
    def unsupported(self, problem, pair) -> str | None:
        """Why this formulation cannot integrate `problem` with `pair`, or None."""

    @abc.abstractmethod
    def init(self, problem, pair, schedule, w0: Params) -> tuple[PyTree, Any]:
        r"""The initial state $y_0$ and the arguments the field needs (`args`)."""

    @abc.abstractmethod
    def field(self, t, y: PyTree, problem, args) -> PyTree:
        r"""The vector field $F(t, y)$."""

    @abc.abstractmethod
    def point(self, t, y: PyTree, problem, args) -> Point:
        r"""The model point $x$ that the state $y$ at time $t$ stands for."""

    @abc.abstractmethod
    def parameters(self, y: PyTree) -> Params | None:
        """The parameters w that the state stands for, or None where it never forms w."""

    def amplification(self, t, args):
        r"""How many times more than usual this formulation's state errors are
        amplified in x at time t (1; the formulations that integrate $\theta$ ask
        the Legendre function, `AbstractLegendre.dual_amplification`)."""
        return jnp.ones_like(jnp.asarray(t))

    def alpha(self, t, args):
        r"""The weight decay $\alpha_t$ (every formulation's `args` carry the
        schedule)."""
        return args.schedule(t)

    def check(self, problem, pair) -> None:
        """Raise a `ValueError` with the reason if this formulation cannot run."""
        reason = self.unsupported(problem, pair)
        if reason is not None:
            raise ValueError(f"`formulation={self.name!r}` {reason}")
