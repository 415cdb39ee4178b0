r"""The row-space formulation: the dual flow in the d coordinates it can move in."""

from typing import ClassVar

import jax.numpy as jnp

from .._problems import AbstractLinearProblem
from ._base import AbstractFormulation
from ._legendre_args import closed_form_reason, legendre_args


class RowSpaceFormulation(AbstractFormulation):
    r"""The dual flow restricted to the row space of the design matrix.

    For a loss of the predictions, $f(x) = \phi(Dx)$ with $D$ of shape d x n
    (`AbstractLinearProblem`: least squares, logistic, matrix sensing), the gradient
    $\nabla f = D^\top\nabla\phi(Dx)$ lies in $\operatorname{range}(D^\top)$, so
    $$\theta_t = \theta_0 + D^\top\mu_t, \qquad \dot\mu = -\kappa(a_t)\nabla\phi(Dx_t), \qquad
    x_t = (\nabla R_{a_t})^{-1}(\theta_0 + D^\top\mu_t), \qquad \mu_0 = 0.$$
    The state $\mu$ has d entries instead of n; `rtol` and `atol` apply to $\mu$.
    Needs an `AbstractClosedFormPair` and an `AbstractLinearProblem`. The fastest
    formulation for batches when d < n.
    """

    name: ClassVar[str] = "rowspace"
    isolated_limit: ClassVar[bool] = True  # mu solves d equations in d unknowns

    def unsupported(self, problem, pair):
        if not isinstance(problem, AbstractLinearProblem):
            return (
                "needs a loss of the predictions Dx (an `AbstractLinearProblem`: "
                "`jm.LeastSquares`, `jm.Logistic`, `jm.MatrixSensing`); got "
                f"{type(problem).__name__}. Use formulation='dual'."
            )
        return closed_form_reason(pair)

    def init(self, problem, pair, schedule, w0):
        args = legendre_args(pair, schedule, w0)
        d = problem.design().shape[-2]
        return jnp.zeros((d,), args.theta0.dtype), args

    def field(self, t, mu, problem, args):
        x = self.point(t, mu, problem, args)
        clock = args.clock(t)
        # -(clock * g), not -clock * g: a clock that is the constant 1 would make
        # `neg` of a literal, which the Pallas Triton lowering (flow kernel) rejects.
        return -(clock * problem.prediction_grad(problem.predict(x)))

    def point(self, t, mu, problem, args):
        theta = args.theta0 + mu @ problem.design()
        return args.legendre.grad_inverse(theta, args.a(t))

    def amplification(self, t, args):
        return args.legendre.dual_amplification(args.a(t))

    def parameters(self, y):
        return None
