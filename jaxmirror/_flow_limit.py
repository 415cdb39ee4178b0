r"""The constrained limit for a `FlowLegendre`: Newton's method on the dual, walking
each coordinate along its orbit instead of re-integrating it from the start.

The limit minimises $R_a(x) - \langle\theta_0, x\rangle$ on $Zx = y$, so it is
$x = F(\tau, a)$ at $\tau = \theta_0 + Z^\top\lambda$, where $\lambda$ maximises the
concave dual $D(\lambda) = \langle\lambda, y\rangle - R^*_a(\theta_0 + Z^\top\lambda)$
(`jaxmirror._implicit_bias`). For a numerical $R_a$ every evaluation of F is an orbit;
here each Newton step moves every coordinate from where the last one left it, by
$\Delta\sigma = e^{-\kappa a} Z^\top\Delta\lambda$, carrying $\int\gamma\,d\sigma$ (so
$R^*_a$, for the Armijo test) along: near the answer a step is one or two steps of
the ODE solver. The answer is differentiable: its derivative follows from the
optimality conditions (implicit function theorem), $x = F(\tau, a; w_0)$ and $Zx = y$,
$$Z\,\mathrm{diag}(\partial_\tau F)\,Z^\top\delta\lambda = \delta y - \delta Z\,x -
  Z\,\delta F\big|_{\delta\tau = \delta\theta_0 + \delta Z^\top\lambda},\qquad
  \delta x = \delta F + \partial_\tau F\odot Z^\top\delta\lambda,$$
with one orbit and its Jacobians for $\delta F$.
"""

import equinox as eqx
import jax
import jax.numpy as jnp

from ._flow_legendre import dense_tangents, descend, flow_map, orbit
from ._linear import ridged_solve
from ._status import BiasStatus


TRIAL_STEPS = 32


def _first(end):
    return {"z": end["z"], "Ig": end["Ig"]}


def _newton(fields, w0, kappa, theta0, a, Z, y, tolerances, tol, max_iter):
    r"""$\lambda^*$, the end points of the orbits there, and a status code."""
    shrink, grow = jnp.exp(-kappa * a), jnp.exp(kappa * a)
    w_a = descend(fields, w0, a, tolerances)["z"]
    # From w_a to theta0 (0 where the Legendre function's own x0 is the start).
    first = jax.lax.cond(
        jnp.all(theta0 == 0),
        lambda: {"z": w_a, "Ig": jnp.zeros_like(theta0)},
        lambda: _first(orbit(fields, w_a, theta0 * shrink, tolerances, integrals=True)),
    )
    y_scale = 1.0 + jnp.max(jnp.abs(y))

    def dual(lam, Ig):
        return jnp.dot(lam, y) - jnp.sum(grow * Ig)

    # A trial step that needs more than TRIAL_STEPS solver steps is rejected (the step
    # is halved), as one that leaves the domain is: far from the answer, a full
    # Newton step can send an orbit towards a blow-up that the solver would approach
    # in thousands of ever smaller steps.
    trial_tolerances = tolerances[:2] + (TRIAL_STEPS,)

    def walk(z, Ig, dsigma):
        end = orbit(fields, z, dsigma, trial_tolerances, integrals=True)
        return end["z"], Ig + end["Ig"]

    def residual(z):
        return jnp.max(jnp.abs(Z @ fields.g(z) - y))

    def body(state):
        lam, z, Ig, it, _, last = state
        ascent = y - Z @ fields.g(z)  # the gradient of D
        X = fields.X(z)
        slope_diag = shrink * jnp.sum(X * X, axis=-1)  # dx/dtau
        step = ridged_solve((Z * slope_diag[None, :]) @ Z.T, ascent)
        dsigma = shrink * (Z.T @ step)
        d0 = dual(lam, Ig)
        slope = jnp.dot(ascent, step)
        # Slack for rounding: near the optimum D changes by less than its last digits.
        slack = 64 * jnp.finfo(d0.dtype).eps * (1.0 + jnp.abs(d0))

        def try_step(s):
            z_new, Ig_new = walk(z, Ig, s * dsigma)
            d_new = dual(lam + s * step, Ig_new)
            ok = jnp.isfinite(d_new) & (d_new >= d0 + 1e-4 * s * slope - slack)
            return s, ok, z_new, Ig_new

        def halve(search):
            return try_step(0.5 * search[0])

        s, _, z_new, Ig_new = jax.lax.while_loop(
            lambda search: ~search[1] & (search[0] > 1e-300),
            halve,
            # The search starts at twice the last step taken (at most 1): far from
            # the answer the steps stay damped for several iterations, and each
            # halving costs an orbit.
            try_step(jnp.minimum(2.0 * last, 1.0)),
        )
        return lam + s * step, z_new, Ig_new, it + 1, residual(z_new), s

    def cond(state):
        _, _, _, it, res, _ = state
        return (it < max_iter) & (res > tol * y_scale) & jnp.isfinite(res)

    lam0 = jnp.zeros_like(y)
    res0 = residual(first["z"])
    state = (lam0, first["z"], first["Ig"], jnp.array(0), res0, jnp.ones_like(res0))
    lam, z, _, _, res, _ = jax.lax.while_loop(cond, body, state)
    status = jnp.where(
        ~jnp.isfinite(res),
        BiasStatus.NONFINITE,
        jnp.where(
            res <= tol * y_scale, BiasStatus.CONVERGED, BiasStatus.MAX_ITERATIONS
        ),
    )
    return lam, z, status


@eqx.filter_custom_jvp
def _limit(w0, kappa, theta0, a, Z, y, *, fields, tolerances, tol, max_iter):
    _, z, status = _newton(
        fields, w0, kappa, theta0, a, Z, y, tolerances, tol, max_iter
    )
    return fields.g(z), status.astype(z.dtype)


@_limit.def_jvp
def _limit_jvp(primals, tangents, *, fields, tolerances, tol, max_iter):
    w0, kappa, theta0, a, Z, y = primals
    dw0, _, dtheta0, da, dZ, dy = dense_tangents(primals, tangents)
    lam, z, status = _newton(
        fields, w0, kappa, theta0, a, Z, y, tolerances, tol, max_iter
    )
    x = fields.g(z)
    tau = theta0 + Z.T @ lam
    X = fields.X(z)
    slope_diag = jnp.exp(-kappa * a) * jnp.sum(X * X, axis=-1)
    # dF at the tangents known before the multiplier's: one orbit with its Jacobians.
    _, moved = jax.jvp(
        lambda w, t, b: flow_map(w, kappa, t, b, fields=fields, tolerances=tolerances),
        (w0, tau, a),
        (dw0, dtheta0 + dZ.T @ lam, da),
    )
    rhs = dy - dZ @ x - Z @ moved
    dlam = ridged_solve((Z * slope_diag[None, :]) @ Z.T, rhs)
    dx = moved + slope_diag * (Z.T @ dlam)
    primal = (x, status.astype(x.dtype))
    return primal, (dx, jnp.zeros_like(primal[1]))


def flow_constrained_limit(legendre, theta0, a, Z, y, tol, max_iter):
    r"""`constrained_limit` for a `FlowLegendre`: x and a status code."""
    x, status = _limit(
        legendre.w0,
        legendre.kappa,
        theta0,
        legendre.times(a),
        Z,
        y,
        fields=legendre.fields,
        tolerances=legendre.tolerances,
        tol=tol,
        max_iter=max_iter,
    )
    return x, jax.lax.stop_gradient(status).astype(jnp.int32)
