r"""Where the flow ends, predicted without integrating it (docs/theory.md, section 4).

**Switch-off regime** ($a_\infty = -\int_0^\infty \alpha_s ds$ finite, least squares that
can interpolate): $\nabla R_{a_t}(x_t) - \nabla R_0(x_0) = -\int_0^t \nabla f\,ds$ stays in
$\operatorname{range}(Z^\top)$, so the limit is
$$x_\infty = \arg\min_x\; R_{a_\infty}(x) - \langle \nabla R_0(x_0), x\rangle
\quad\text{s.t.}\quad Zx = y.$$
It is found through the concave dual
$D(\lambda) = \langle\lambda, y\rangle - R^*_{a_\infty}(\theta_0 + Z^\top\lambda)$, whose
maximiser gives $x_\infty = \nabla R^*_{a_\infty}(\theta_0 + Z^\top\lambda)$: Newton's method
with a backtracking (Armijo) line search on $D$, and gradients by the implicit function
theorem (`jax.lax.custom_root`), never by differentiating the iterations.

**Constant regime** ($\alpha_t \to \alpha_\infty > 0$ and $a_\infty = -\infty$): the flow
tends to the minimiser of $f(x) + \alpha_\infty \rho(x)$ with the pair's induced penalty
$\rho$ (the lasso $f + \alpha|x|_1$ for `Hadamard`), found by accelerated proximal
gradient (FISTA with adaptive restart). This branch is not reverse-differentiable.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from ._arguments import check_bias_options, check_inputs
from ._checking import float_dtype, is_concrete
from ._flow_legendre import FlowLegendre
from ._flow_limit import flow_constrained_limit
from ._formulations._legendre_args import legendre_args
from ._linear import ridged_solve
from ._pairs import (
    AbstractClockOnlyPair,
    AbstractClosedFormPair,
    AbstractMatrixPair,
    AbstractPenalisedPair,
)
from ._problems import AbstractLeastSquares, AbstractLinearProblem, MatrixSensing
from ._programs import stored_program
from ._status import BiasStatus


def can_interpolate(problem) -> bool:
    """Least squares with d <= n (its arrays may carry a leading configuration axis):
    the flow interpolates, so a schedule that switches off has the constrained limit."""
    return isinstance(problem, AbstractLeastSquares) and problem.can_interpolate()


def _interpolating_reason(problem, pair) -> str | None:
    """Why no limit after a switch-off can be predicted here, or None."""
    if isinstance(pair, AbstractMatrixPair):
        if isinstance(problem, MatrixSensing):
            return None  # through the commuting reduction, which checks the rest
        return (
            f"`problem`: {type(pair).__name__} needs a jm.MatrixSensing problem, got "
            f"{type(problem).__name__}."
        )
    if not isinstance(pair, AbstractClosedFormPair):
        return (
            "`pair`: the limit of a schedule that switches off needs a pair with a "
            f"closed-form Legendre function (`AbstractClosedFormPair`); "
            f"{type(pair).__name__} does not declare it."
        )
    if not can_interpolate(problem):
        return (
            "`problem`: the limit of a schedule that switches off needs a "
            "least-squares problem (`jm.AbstractLeastSquares`: `jm.LeastSquares`, "
            "`jm.MatrixSensing`) with at most as many measurements as unknowns "
            "(d <= n), so that the flow interpolates"
        )
    return None


def _penalised_reason(problem, pair) -> str | None:
    """Why no constant-weight-decay limit can be predicted here, or None."""
    if not isinstance(pair, AbstractPenalisedPair):
        return (
            "`pair`: the constant-weight-decay limit needs a pair with a known induced "
            f"penalty (`AbstractPenalisedPair`); {type(pair).__name__} does not declare "
            "it."
        )
    unavailable = pair.penalised_limit_unavailable()
    if unavailable is not None:
        return unavailable
    if not isinstance(problem, AbstractLinearProblem):
        return (
            "`problem`: the constant-weight-decay limit needs a loss of the predictions "
            "with a known gradient Lipschitz constant (`jm.LeastSquares`, "
            f"`jm.Logistic`, `jm.MatrixSensing`), got {type(problem).__name__}."
        )
    return None


def prediction_regime(problem, pair, schedule) -> bool | None:
    r"""Which limit `implicit_bias` computes, or a `ValueError` saying why none exists.

    The one rule of when a limit can be predicted, used by `implicit_bias` and
    `sweep`. **Returns:** `True` when every $a_\infty$ of `schedule` (which may be a
    batch) is finite (the constrained limit after a switch-off), `False` when none is
    (the penalised limit under constant weight decay), `None` when both occur or the
    schedule is traced (both limits are computed and selected per configuration).
    For an `AbstractClockOnlyPair` it is always `True`: weight decay changes only the
    clock, and the limit is the constrained one for every schedule.
    """
    a_inf = schedule.a_inf()
    regime = None
    if isinstance(pair, AbstractClockOnlyPair):
        regime = True  # the limit does not depend on the schedule
    elif is_concrete(a_inf):
        finite = np.isfinite(np.asarray(a_inf))
        regime = True if finite.all() else (False if not finite.any() else None)
    elif schedule.always_switches_off:
        regime = True  # traced (under jax.grad), but finite for every valid value
    if isinstance(pair, AbstractMatrixPair) and regime is None:
        raise ValueError(
            "`schedule`: matrix pairs need concrete schedule parameters of one kind "
            "(all switching off, or all constant)."
        )
    reasons = []
    if regime in (True, None):
        reasons.append(_interpolating_reason(problem, pair))
    if regime in (False, None):
        reasons.append(_penalised_reason(problem, pair))
    reasons = [r for r in reasons if r is not None]
    if reasons:
        context = "" if regime is not None else " (for a traced or mixed schedule)"
        raise ValueError("; and ".join(reasons) + context + ".")
    return regime


def default_tol() -> float:
    """max(1e-12, 100 eps) of the default floating dtype."""
    return max(1e-12, 100 * float(jnp.finfo(float_dtype()).eps))


def _newton_dual(legendre, theta0, a_inf, Z, y, tol, max_iter, lam_guess):
    r"""Maximise the dual $D(\lambda)$ from `lam_guess` (from 0 where that is higher or
    the guess is not finite); return $\lambda^*$ and a status code."""

    def x_of(lam):
        return legendre.grad_inverse(theta0 + Z.T @ lam, a_inf)

    def dual(lam):
        return jnp.dot(lam, y) - legendre.conjugate(theta0 + Z.T @ lam, a_inf)

    y_scale = 1.0 + jnp.max(jnp.abs(y))

    def residual(lam):
        return Z @ x_of(lam) - y

    def cond(state):
        _, it, res, _ = state
        return (it < max_iter) & (res > tol * y_scale) & jnp.isfinite(res)

    def body(state):
        lam, it, _, _ = state
        theta = theta0 + Z.T @ lam
        x, dx_dtheta = jax.jvp(
            lambda th: legendre.grad_inverse(th, a_inf),
            (theta,),
            (jnp.ones_like(theta),),
        )
        ascent = y - Z @ x  # the gradient of D
        hess = (Z * dx_dtheta[None, :]) @ Z.T  # minus the Hessian of D
        step = ridged_solve(hess, ascent)
        d0 = dual(lam)
        slope = jnp.dot(ascent, step)
        # Slack for rounding: near the optimum D changes by less than its last digits.
        slack = 64 * jnp.finfo(d0.dtype).eps * (1.0 + jnp.abs(d0))

        def too_long(s):
            d_new = dual(lam + s * step)
            return ~(jnp.isfinite(d_new) & (d_new >= d0 + 1e-4 * s * slope - slack))

        s = jax.lax.while_loop(
            lambda s: too_long(s) & (s > 1e-300), lambda s: 0.5 * s, jnp.ones_like(d0)
        )
        lam = lam + s * step
        res = jnp.max(jnp.abs(residual(lam)))
        return lam, it + 1, res, s

    zero = jnp.zeros_like(y)
    d_guess = dual(lam_guess)
    better = jnp.all(jnp.isfinite(lam_guess)) & jnp.isfinite(d_guess)
    lam0 = jnp.where(better & (d_guess >= dual(zero)), lam_guess, zero)
    res0 = jnp.max(jnp.abs(residual(lam0)))
    lam, _, res, _ = jax.lax.while_loop(
        cond, body, (lam0, jnp.array(0), res0, jnp.ones_like(res0))
    )
    status = jnp.where(
        ~jnp.isfinite(res),
        BiasStatus.NONFINITE,
        jnp.where(
            res <= tol * y_scale, BiasStatus.CONVERGED, BiasStatus.MAX_ITERATIONS
        ),
    )
    return lam, status


def _multiplier_guess(legendre, theta0, a, Z, x_guess):
    r"""The $\lambda$ whose $\theta_0 + Z^\top\lambda$ is closest to $\nabla R_a$ at
    `x_guess`: the normal equations $ZZ^\top\lambda = Z(\nabla R_a(x) - \theta_0)$."""
    return ridged_solve(Z @ Z.T, Z @ (legendre.grad(x_guess, a) - theta0))


def constrained_limit(legendre, theta0, a_inf, problem, tol, max_iter, x_guess=None):
    r"""$\arg\min_x R_{a}(x) - \langle\theta_0, x\rangle$ s.t. $Zx = y$, and a status.

    `a_inf` may be a scalar or one value per coordinate. `x_guess` (optional) is a
    point near the answer, such as where a flow ended: Newton's method starts from
    its multiplier when the dual is higher there than at 0. The answer is the same
    to the tolerance, in fewer iterations (a (40, 100) sparse-recovery sweep: up to
    20 from 0, up to 8 and mostly 1 to 5 from where its flows ended at T = 200).
    """
    Z, y = problem.design(), problem.y
    if isinstance(legendre, FlowLegendre):
        return flow_constrained_limit(legendre, theta0, a_inf, Z, y, tol, max_iter)
    if legendre.cancels_in_theta:
        return _primal_limit(legendre, theta0, a_inf, Z, y, tol, max_iter, x_guess)
    if x_guess is None:
        lam_guess = jnp.zeros_like(y)
    else:
        lam_guess = _multiplier_guess(
            *jax.lax.stop_gradient((legendre, theta0, a_inf, Z, x_guess))
        )

    def root_fn(lam):
        return Z @ legendre.grad_inverse(theta0 + Z.T @ lam, a_inf) - y

    def newton(_, guess):
        lam, status = _newton_dual(
            jax.lax.stop_gradient(legendre),
            jax.lax.stop_gradient(theta0),
            jax.lax.stop_gradient(a_inf),
            jax.lax.stop_gradient(Z),
            jax.lax.stop_gradient(y),
            tol,
            max_iter,
            guess,
        )
        # The status travels as a float: custom_root's aux output gets a (zero) tangent.
        return lam, status.astype(lam.dtype)

    def tangent_solve(linear, rhs):
        return jnp.linalg.solve(jax.jacfwd(linear)(rhs), rhs)

    lam, status = jax.lax.custom_root(
        root_fn, lam_guess, newton, tangent_solve, has_aux=True
    )
    x = legendre.grad_inverse(theta0 + Z.T @ lam, a_inf)
    return x, jax.lax.stop_gradient(status).astype(jnp.int32)


def _primal_newton(legendre, theta0, a, Z, y, basis, tol, max_iter, x_start):
    r"""Minimise $\Phi(x) = R_a(x) - \langle\theta_0, x\rangle$ on $Zx = y$ by
    Newton's method in the null space of Z, from a feasible `x_start`, following
    the path $a_j = (j/J)\,a$ from $a = 0$; return x and a status.

    With $x = x_{\rm start} + Nw$ ($N$ = `basis`, orthonormal, of Z's null space) each step
    solves $(N^\top H N)\Delta w = -N^\top g$, $H = \nabla^2 R_a(x)$ and $g = \nabla
    R_a(x) - \theta_0$, both formed from x without cancellation. Where a coordinate
    carries the answer its $H$ is tiny (1e-17 at $a = -20$, L = 4) and its
    $\nabla R_a$ is known only to rounding; this form never divides by that $H$,
    so the rounding stays where it is instead of being amplified by $H^{-1}$ (as in
    the metric-weighted normal equations). The step is halved while the
    directional derivative $\Phi'(s) = \langle g(x + s\Delta x), \Delta x\rangle$
    (increasing: $\Phi$ is convex) has overshot by more than half of $|\Phi'(0)|$.
    Each stage lowers $a$ by at most 1/2, so that Newton starts near the answer: the
    far end of the path is an interior-point method with barrier weight
    $e^{(L-2)a}$, which a single stage from the pseudo-inverse reaches only in many
    damped steps.
    """
    size = 1.0 + jnp.max(jnp.abs(x_start))
    a = jnp.broadcast_to(jnp.asarray(a, x_start.dtype), x_start.shape)
    stages = jnp.maximum(jnp.ceil(2.0 * jnp.max(jnp.abs(a))), 1.0)

    def newton_step(x, a_j):
        g = legendre.grad(x, a_j) - theta0
        h = legendre.hessian_diag(x, a_j)
        K = (basis.T * h[None, :]) @ basis
        scale = 1.0 / jnp.sqrt(jnp.diag(K))  # Jacobi scaling: h spans 1e50 and more
        z = ridged_solve(K * scale[:, None] * scale[None, :], scale * (basis.T @ g))
        step = -basis @ (scale * z)
        start = jnp.dot(g, step)  # <= 0: a descent direction

        def slope(s):
            return jnp.dot(legendre.grad(x + s * step, a_j) - theta0, step)

        s = jax.lax.while_loop(
            lambda s: (slope(s) > -0.5 * start) & (s > 1e-30),
            lambda s: 0.5 * s,
            jnp.ones_like(start),
        )
        return x + s * step, jnp.max(jnp.abs(s * step))

    def stage(x, j):
        a_j = (j / stages) * a
        last = j >= stages
        stage_tol = jnp.where(last, tol, jnp.sqrt(tol))

        def cond(state):
            _, it, change = state
            going = (change > stage_tol * size) & jnp.isfinite(change)
            return (it < max_iter) & ((it == 0) | going)

        def body(state):
            x, it, _ = state
            x, change = newton_step(x, a_j)
            return x, it + 1, change

        inf = jnp.array(jnp.inf, x.dtype)
        return jax.lax.while_loop(cond, body, (x, jnp.array(0), inf))

    def outer(state):
        x, j, _ = state
        x, _, change = stage(x, j + 1.0)
        return x, j + 1.0, change

    zero = jnp.zeros((), x_start.dtype)
    x, _, change = jax.lax.while_loop(
        lambda s: (s[1] < stages) & jnp.isfinite(s[2]), outer, (x_start, zero, zero)
    )
    residual = jnp.max(jnp.abs(Z @ x - y)) / (1.0 + jnp.max(jnp.abs(y)))
    status = jnp.where(
        ~(jnp.isfinite(change) & jnp.isfinite(residual)),
        BiasStatus.NONFINITE,
        jnp.where(
            (change <= tol * size) & (residual <= 1e3 * tol),
            BiasStatus.CONVERGED,
            BiasStatus.MAX_ITERATIONS,
        ),
    )
    return x, status


def _primal_limit(legendre, theta0, a, Z, y, tol, max_iter, x_guess=None):
    r"""`constrained_limit` for a Legendre function that cancels in $\theta$: Newton
    in x (`_primal_newton`), differentiated by the implicit function theorem on the
    optimality conditions in x, $Zx = y$ and $N^\top(\nabla R_a(x) - \theta_0) = 0$
    ($N$ an orthonormal basis of the null space of Z), which the metric keeps well
    posed where $\theta$ itself cannot be resolved."""
    d, n = Z.shape
    basis = jnp.linalg.svd(Z, full_matrices=True)[2][d:].T  # null space, n x (n - d)
    pinv_y = jnp.linalg.lstsq(Z, y)[0]
    start = (
        pinv_y if x_guess is None else x_guess + jnp.linalg.lstsq(Z, y - Z @ x_guess)[0]
    )
    start = jnp.where(jnp.all(jnp.isfinite(start)), start, pinv_y)

    def optimality(x):
        return jnp.concatenate([Z @ x - y, basis.T @ (legendre.grad(x, a) - theta0)])

    def solve(_, guess):
        x, status = _primal_newton(
            *jax.lax.stop_gradient((legendre, theta0, a, Z, y, basis)),
            tol,
            max_iter,
            jax.lax.stop_gradient(guess),
        )
        return x, status.astype(x.dtype)

    def tangent_solve(linear, rhs):
        return jnp.linalg.lstsq(jax.jacfwd(linear)(rhs), rhs)[0]

    x, status = jax.lax.custom_root(
        optimality, start, solve, tangent_solve, has_aux=True
    )
    return x, jax.lax.stop_gradient(status).astype(jnp.int32)


def _penalised_limit(problem, pair, alpha, n, dtype, tol, max_iter):
    r"""FISTA with adaptive restart for $\min_x f(x) + \alpha\rho(x)$."""
    step = 1.0 / problem.lipschitz()

    def prox_grad(z):
        return pair.penalty_prox(z - step * problem.grad(z), step * alpha)

    def gap(x):
        return jnp.max(jnp.abs(x - prox_grad(x))) / (1.0 + jnp.max(jnp.abs(x)))

    def cond(state):
        x, _, _, it, res = state
        return (it < max_iter) & (res > tol)

    def body(state):
        x, z, t, it, _ = state
        x_new = prox_grad(z)
        t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t**2))
        z_new = x_new + (t - 1.0) / t_new * (x_new - x)
        # O'Donoghue & Candes (2015): restart momentum when it points uphill.
        restart = jnp.dot(z - x_new, x_new - x) > 0
        z_new = jnp.where(restart, x_new, z_new)
        t_new = jnp.where(restart, 1.0, t_new)
        return x_new, z_new, t_new, it + 1, gap(x_new)

    x0 = jnp.zeros(n, dtype)
    one = jnp.ones((), dtype)
    x, _, _, _, res = jax.lax.while_loop(
        cond, body, (x0, x0, one, jnp.array(0), jnp.array(jnp.inf, dtype))
    )
    status = jnp.where(
        ~jnp.isfinite(res),
        BiasStatus.NONFINITE,
        jnp.where(res <= tol, BiasStatus.CONVERGED, BiasStatus.MAX_ITERATIONS),
    )
    return x, status.astype(jnp.int32)


def implicit_bias(
    problem,
    pair,
    schedule,
    w0,
    *,
    tol=None,
    max_iter=None,
    return_status: bool = False,
) -> Float[Array, " n"] | tuple[Float[Array, " n"], Int[Array, ""]]:
    # `tol` and `max_iter` unannotated: their checks give messages naming them.
    r"""The point the regularized flow converges to, computed without integrating it.

    - If the schedule's total effect $a_\infty = -\int_0^\infty\alpha_s ds$ is finite
      (`SwitchOff`, `ExponentialDecay`, decays to zero): the minimiser of
      $R_{a_\infty}(x) - \langle\nabla R_0(x_0), x\rangle$ subject to $Zx = y$, for a
      `LeastSquares` problem with $d \le n$ (the flow interpolates). Any initialisation
      $x_0 = g(w_0)$ is allowed. Differentiable (implicit function theorem).
    - If $a_\infty = -\infty$ with $\alpha_t \to \alpha_\infty > 0$ (`Constant`): the
      minimiser of $f(x) + \alpha_\infty\rho(x)$, $\rho$ the pair's `penalty` (the lasso
      for `Hadamard`, whose loss is $\tfrac12|Zx - y|^2$, not divided by $d$).
    - For a pair on which weight decay only runs the clock (`AbstractClockOnlyPair`,
      such as `LogDifference`): the constrained limit, for every schedule.

    Under `jax.vmap` over schedules of both kinds, both limits are computed and the right
    one selected.

    **Arguments:**

    - `problem`: `jm.LeastSquares` (either regime) or `jm.Logistic` (constant regime);
      `jm.MatrixSensing` for the matrix pairs.
    - `pair`: an `AbstractClosedFormPair` (switch-off regime), an
      `AbstractPenalisedPair` (constant regime), or an `AbstractMatrixPair` (through
      its commuting reduction, or its penalty).
    - `schedule`: the weight-decay schedule.
    - `w0`: the initial parameters.
    - `tol`: relative tolerance on the constraint residual (switch-off) or on the
      proximal-gradient fixed point (constant); default `max(1e-12, 100 eps)` of the
      dtype (1e-12 in float64, about 1e-5 in float32).
    - `max_iter`: iteration cap (default 200 Newton, 200,000 proximal iterations).
    - `return_status`: also return a status code (0 converged, 1 max iterations,
      2 non-finite); otherwise non-convergence raises, even under `jit`.

    **Returns:** $x_\infty$, shape `(n,)` (and the status if `return_status`).
    """
    tol, max_iter = check_bias_options(tol, max_iter)
    tol = default_tol() if tol is None else tol
    problem, w0 = check_inputs(problem, pair, schedule, w0)
    regime = prediction_regime(problem, pair, schedule)
    if isinstance(pair, AbstractMatrixPair):
        x, status = _matrix_limit(problem, pair, schedule, w0, regime, tol, max_iter)
    else:
        # The Legendre function and theta_0 once, eagerly where w0 is concrete, so that
        # a degenerate initialisation is reported before the solve.
        args = None if regime is False else legendre_args(pair, schedule, w0)
        x, status = _implicit_bias(
            problem, pair, schedule, pair.g(w0), args, tol, max_iter, regime
        )
    return _finish(x, status, return_status)


def _finish(x, status, return_status):
    if return_status:
        return x, status
    return eqx.error_if(
        x,
        status != BiasStatus.CONVERGED,
        "`implicit_bias` did not converge (pass return_status=True to inspect, or "
        "raise `max_iter`/loosen `tol`).",
    )


def _matrix_limit(problem, pair, schedule, w0, regime, tol, max_iter):
    r"""Matrix pairs: the commuting reduction (switch-off) or the nuclear-norm limit."""
    if regime:
        reduction = pair.commuting_reduction(problem, w0)
        z, status = implicit_bias(
            reduction.problem,
            reduction.pair,
            schedule,
            reduction.w0,
            tol=tol,
            max_iter=max_iter,
            return_status=True,
        )
        return reduction.lift(z), status
    return _penalised_jit(problem, pair, schedule, pair.g(w0), tol, max_iter)


@stored_program
def _penalised_jit(problem, pair, schedule, x0, tol, max_iter):
    iters = 200_000 if max_iter is None else max_iter
    alpha = schedule.alpha_inf()
    return _penalised_limit(problem, pair, alpha, x0.shape[0], x0.dtype, tol, iters)


@stored_program
def _implicit_bias(
    problem, pair, schedule, x0, args, tol, max_iter, regime, x_guess=None
):
    """The limit for one configuration; `regime` as returned by `prediction_regime`,
    `args` the `LegendreArgs` of the initialisation (None in the penalised regime),
    `x_guess` an optional starting point for the constrained limit's Newton method
    (where a flow ended). The penalised limit starts from 0: FISTA's answer moves
    with its start by up to its stopping tolerance's worth (1e-10 measured), more
    than a sweep's prediction may differ from `implicit_bias`'s."""

    def interpolating():
        iters = 200 if max_iter is None else max_iter
        a_inf = schedule.a_inf()
        finite = jnp.isfinite(a_inf)
        x, status = constrained_limit(
            args.legendre,
            args.theta0,
            jnp.where(finite, a_inf, 0.0),
            problem,
            tol,
            iters,
            x_guess,
        )
        # A clock-only pair's limit does not depend on a; any other needs it finite.
        valid = finite | isinstance(pair, AbstractClockOnlyPair) | (regime is not True)
        return x, jnp.where(valid, status, BiasStatus.NONFINITE).astype(status.dtype)

    def penalised():
        iters = 200_000 if max_iter is None else max_iter
        alpha = schedule.alpha_inf()
        return _penalised_limit(problem, pair, alpha, x0.shape[0], x0.dtype, tol, iters)

    if regime is True:
        return interpolating()
    if regime is False:
        return penalised()
    return jax.lax.cond(jnp.isfinite(schedule.a_inf()), interpolating, penalised)
