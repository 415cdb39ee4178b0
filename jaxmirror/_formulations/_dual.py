r"""The dual formulation: integrate the mirror coordinate $\theta = \nabla R_{a_t}(x)$."""

from typing import ClassVar

from ._base import AbstractFormulation
from ._legendre_args import closed_form_reason, legendre_args


class DualFormulation(AbstractFormulation):
    r"""The mirror flow in its dual coordinate, free of Hessians:
    $$\dot\theta = -\kappa(a_t)\,\nabla f\big((\nabla R_{a_t})^{-1}(\theta)\big),
    \qquad \theta_0 = \nabla R_0(x_0),$$
    with the Legendre function's clock $\kappa$ (1 for most pairs).

    Needs an `AbstractClosedFormPair`; the state has n entries. Cheapest per step and
    stable for tiny initial scales (the inverse mirror map is evaluated in log space).
    When weight decay never switches off, $\theta$ grows without bound and the relative
    error of x grows like `rtol` $\cdot|\theta|$: prefer the mirror or parameter
    formulation for long constant-weight-decay runs.
    """

    name: ClassVar[str] = "dual"
    isolated_limit: ClassVar[bool] = (
        False  # theta stops anywhere on theta_0 + range(D^T) + null
    )

    def unsupported(self, problem, pair):
        return closed_form_reason(pair)

    def init(self, problem, pair, schedule, w0):
        args = legendre_args(pair, schedule, w0)
        return args.theta0, args

    def field(self, t, theta, problem, args):
        clock = args.clock(t)
        return -clock * problem.grad(self.point(t, theta, problem, args))

    def point(self, t, theta, problem, args):
        return args.legendre.grad_inverse(theta, args.a(t))

    def amplification(self, t, args):
        return args.legendre.dual_amplification(args.a(t))

    def parameters(self, y):
        return None
