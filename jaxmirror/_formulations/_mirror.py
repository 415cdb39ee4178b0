r"""The mirror (primal) formulation: integrate $x$ in the Hessian metric of $R_{a_t}$."""

from typing import ClassVar

import jax
import jax.numpy as jnp

from ._base import AbstractFormulation
from ._legendre_args import closed_form_reason, legendre_args


class MirrorFormulation(AbstractFormulation):
    r"""The time-varying mirror flow written in $x$ (docs/theory.md, section 2):
    $$\dot x = -\big[\nabla^2 R_{a_t}(x)\big]^{-1}\big(\kappa(a_t)\nabla f(x)
        - \alpha_t\,\partial_a \nabla R_a(x)\big|_{a = a_t}\big),$$
    with the Legendre function's clock $\kappa$ (1 for most pairs).

    The term $-\partial_a\nabla R_a$ is $\nabla_x y_a(x)$, the regularizer $y = h(w)$
    written as a function of x. Needs an `AbstractClosedFormPair`; the state is x itself
    (n entries). The most accurate formulation for long constant-weight-decay runs,
    where the dual coordinate grows without bound.
    """

    name: ClassVar[str] = "mirror"
    isolated_limit: ClassVar[bool] = (
        False  # x stops on the interpolating set, a manifold
    )

    def unsupported(self, problem, pair):
        return closed_form_reason(pair)

    def init(self, problem, pair, schedule, w0):
        args = legendre_args(pair, schedule, w0)
        return pair.g(w0), args

    def field(self, t, x, problem, args):
        a = args.a(t)
        _, dtheta_da = jax.jvp(
            lambda a_: args.legendre.grad(x, a_), (a,), (jnp.ones_like(a),)
        )
        clock = args.legendre.time_scale(a)
        alpha = args.schedule(t).astype(x.dtype)
        force = clock * problem.grad(x) - alpha * dtheta_da
        return -force / args.legendre.hessian_diag(x, a)

    def point(self, t, x, problem, args):
        return x

    def parameters(self, y):
        return None
