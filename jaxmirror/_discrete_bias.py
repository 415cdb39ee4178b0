r"""The exact discrete picture: gradient descent on a diagonal pair is a mirror descent.

One step of `add_decayed_weights(lam)` + `sgd(eta)` on the closed-form pairs maps the
mirror coordinate $\theta$ and the Legendre time $a$ (now one per coordinate) exactly as
$$\theta' = \theta - \beta - \rho(\beta), \qquad a' = a + \log(1 - \eta\lambda) + \gamma(\beta),
\qquad \beta = \frac{\eta\,\nabla f(x)}{1 - \eta\lambda},$$
with $x = (\nabla R_a)^{-1}(\theta)$ and, per pair (checked against the parameter updates
to rounding in the tests),

| pair | nonlinear remainder $\rho(\beta)$ | gain $\gamma(\beta)$ |
|---|---|---|
| Hadamard | $\operatorname{artanh}\beta - \beta$ | $\tfrac12\log(1 - \beta^2)$ |
| DiffSquares | $\tfrac12\operatorname{artanh}(2\beta) - \beta$ | $\tfrac12\log(1 - 4\beta^2)$ |
| Square | $-\tfrac12\log(1 - 2\beta) - \beta$ | $0$ |

Each pair declares its own as `remainder_and_gain` (the `AbstractMirrorDescentPair`
capability); a pair without it is refused, never given another pair's formulas.

(Hadamard: $c' = c[(1-\eta\lambda)^2 - \eta^2 g^2]$ and
$\theta' = \theta - \operatorname{artanh}(\eta g/(1-\eta\lambda))$, docs/theory.md, section 8; at
$\lambda = 0$ the gain is Even et al.'s (2023).) The linear part $\beta$ stays in
$\operatorname{range}(Z^\top)$, so if the iterates interpolate, the limit is
$$x_\infty = \arg\min_x R_{a_\infty}(x) - \langle\theta_0 - \textstyle\sum_k\rho_k, x\rangle
\quad\text{s.t.}\quad Zx = y, \qquad a_\infty = \sum_k \log(1-\eta\lambda_k) + \gamma_k.$$
Weight decay contributes $\log(1 - \eta\lambda)$ per step instead of the flow's
$-\eta\lambda$, exactly and without running anything; the gains and remainders need the
gradients, which `discrete_implicit_bias` accumulates over the first `gain_steps` steps
(they shrink with $|\nabla f|^2$, so a short prefix captures most of them).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._arguments import (
    check_bias_options,
    check_inputs,
    check_learning_rate,
    check_steps,
)
from ._formulations._legendre_args import legendre_args
from ._implicit_bias import can_interpolate, constrained_limit, default_tol
from ._pairs import AbstractMirrorDescentPair, require
from ._status import BiasStatus


_CAPABILITY = "the exact discrete mirror descent"


def mirror_descent_step(pair, legendre, problem, theta, a, lr, lam):
    r"""One gradient-descent step in mirror coordinates: $(\theta, a) \mapsto (\theta', a')$.

    $\theta' = \theta - \beta - \rho(\beta)$ and
    $a' = a + \log(1 - \eta\lambda) + \gamma(\beta)$ with
    $\beta = \eta\nabla f(x)/(1 - \eta\lambda)$, $x = (\nabla R_a)^{-1}(\theta)$ (module
    docstring). Also returns the step's remainder $\rho$ and gain $\gamma$.

    **Arguments:**

    - `pair`: an `AbstractMirrorDescentPair` (`jm.Hadamard`, `jm.DiffSquares`,
      `jm.Square`); others are refused.
    - `legendre`: `pair.legendre(w0)`.
    - `problem`: the loss.
    - `theta`, `a`: the mirror coordinate and the per-coordinate Legendre time.
    - `lr`, `lam`: the learning rate $\eta$ and this step's weight decay $\lambda$.
    """
    require(pair, AbstractMirrorDescentPair, _CAPABILITY)
    x = legendre.grad_inverse(theta, a)
    beta = lr * problem.grad(x) / (1.0 - lr * lam)
    rho, gamma = pair.remainder_and_gain(beta)
    return theta - beta - rho, a + jnp.log1p(-lr * lam) + gamma, rho, gamma


def discrete_implicit_bias(
    problem,
    pair,
    schedule,
    w0,
    *,
    lr,
    steps: int,
    gain_steps: int = 0,
    tol=None,
    max_iter=200,
    return_status: bool = False,
):
    r"""The predicted endpoint of `steps` steps of gradient descent at learning rate `lr`.

    Uses the exact discrete mirror descent of the module docstring: the weight decay of
    all `steps` steps enters as $\sum_k\log(1 - \eta\alpha_{k\eta})$, and the gradient
    gains and remainders are accumulated over the first `gain_steps` steps (0: none, the
    cheapest prediction; `steps`: everything, an identity check). Assumes the iterates
    interpolate $Zx = y$ (`LeastSquares`, $d \le n$) by the end.

    **Arguments:**

    - `problem`: a `jm.LeastSquares` with $d \le n$.
    - `pair`: an `AbstractMirrorDescentPair` (`jm.Hadamard`, `jm.DiffSquares`,
      `jm.Square`).
    - `schedule`, `w0`: as for `jm.train`.
    - `lr`: the learning rate; `steps`: the length of the run.
    - `gain_steps`: how many leading steps to replay for gains and remainders.
    - `tol`, `max_iter`, `return_status`: as for `jm.implicit_bias`.
    """
    require(pair, AbstractMirrorDescentPair, _CAPABILITY)
    steps = check_steps(steps)
    if not (isinstance(gain_steps, int | np.integer) and 0 <= gain_steps <= steps):
        raise ValueError(
            f"`gain_steps` must be an int in [0, steps], got {gain_steps!r}."
        )
    lr = check_learning_rate(lr)
    problem, w0 = check_inputs(problem, pair, schedule, w0)
    if not can_interpolate(problem):
        raise ValueError(
            "`problem` must be a jm.LeastSquares with d <= n (the iterates interpolate)."
        )
    args = legendre_args(pair, schedule, w0)
    tol, max_iter = check_bias_options(tol, max_iter)
    tol = default_tol() if tol is None else tol
    x, status = _discrete_bias(
        problem,
        pair,
        args,
        lr,
        int(steps),
        int(gain_steps),
        tol,
        max_iter,
    )
    if return_status:
        return x, status
    return eqx.error_if(
        x, status != BiasStatus.CONVERGED, "`discrete_implicit_bias` did not converge."
    )


@eqx.filter_jit
def _discrete_bias(problem, pair, args, lr, steps, gain_steps, tol, max_iter):
    legendre, theta0 = args.legendre, args.theta0
    ks = jnp.arange(steps)
    lams = jax.vmap(args.schedule)(ks.astype(lr.dtype) * lr)
    a_decay = jnp.sum(jnp.log1p(-lr * lams))

    def replay(carry, lam):
        theta, a, rho_sum, gamma_sum = carry
        theta, a, rho, gamma = mirror_descent_step(
            pair, legendre, problem, theta, a, lr, lam
        )
        return (theta, a, rho_sum + rho, gamma_sum + gamma), None

    zeros = jnp.zeros_like(theta0)
    (_, _, rho_sum, gamma_sum), _ = jax.lax.scan(
        replay, (theta0, zeros, zeros, zeros), lams[:gain_steps]
    )
    return constrained_limit(
        legendre, theta0 - rho_sum, a_decay + gamma_sum, problem, tol, max_iter
    )
