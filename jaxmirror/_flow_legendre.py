r"""The time-varying Legendre function of any separable pair whose brackets close,
computed from the flows of its two gradient fields (docs/theory.md, section 5).

For a separable pair, coordinate $i$ has its own parameters $w_i \in \mathbb{R}^p$,
$x_i = \gamma(w_i)$ and $h(w) = \sum_i \eta(w_i)$. Write $X = \nabla\gamma$ and
$Y = \nabla\eta$ (fields on $\mathbb{R}^p$) and $\Phi^V_s$ for the time-$s$ flow of a
field $V$. If $[X, Y] = cX$ with a constant $c$, the flow pushes X forward to a
multiple of itself, $D\Phi^Y_a\,X = e^{ca}\,X\circ\Phi^Y_a$, and the regularized
gradient flow $\dot w_i = -\partial_i f\,X(w_i) - \alpha_t Y(w_i)$ is solved by
$$w_i(t) = \Phi^Y_{a_t}\Phi^X_{\tau_i(t)}\,w_i(0)
         = \Phi^X_{\tau_i e^{-\kappa a_t}}\,\Phi^Y_{a_t}\,w_i(0),\qquad
  \dot\tau_i = -e^{\kappa a_t}\,\partial_i f(x_t),\qquad \kappa = -c,$$
with $a_t = -\int_0^t\alpha_s ds$. So $x_i = F_i(\tau_i, a)$ with
$$F_i(\tau, a) = \gamma\big(\Phi^X_{\sigma}(w_{i,a})\big),\qquad
  \sigma = \tau e^{-\kappa a},\qquad w_{i,a} = \Phi^Y_a(w_i(0)),$$
increasing in $\tau$ ($\partial_\tau F = e^{-\kappa a}|X|^2$), and
$\frac{d}{dt}\nabla R_{a_t}(x_t) = -e^{\kappa a_t}\nabla f(x_t)$ with
$\nabla R_a = F(\cdot, a)^{-1}$: the mirror map is the inverse of F in $\tau$,
$R^*_a(\tau) = \sum_i\int_0^{\tau_i} F_i(s, a)\,ds$ and $R_a(x) = \langle\tau, x\rangle
- R^*_a(\tau)$ at $\tau = \nabla R_a(x)$. The normalisation is $\nabla R_0(x_0) = 0$
(the flow starts at $\tau = 0$) and $R_a(F(0, a)) = 0$: a closed-form $R_a$ of the same
pair differs from this one by $\langle\nabla R^{\rm closed}_0(x_0), x\rangle$ and a
function of $a$ alone, which moves no limit.

**Numerics.** Every evaluation integrates, for all coordinates in one diffrax solve
(Dopri8, error per coordinate in the max norm), first $\Phi^Y_a$, then the X-orbit:
in $\sigma$ for $F$ and $R^*$; parameterised by the level $x = \gamma$ itself
($dz/dx = X/|X|^2$) for $\nabla R_a$ and $R_a$, so no root is searched. Derivatives
(`jax.jvp`, `jax.grad`) come from closed expressions in the end points and the
orbits' Jacobians (variational equations integrated alongside, only when a
derivative is asked for): first derivatives in $x$, $\theta$, $a$ and the
initialisation; the constant $\kappa$ and the pair's own fields are not
differentiated. Outside the flow's domain (an orbit that leaves it or blows up)
the result is NaN, as the closed forms' are.
"""

from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Float

from ._legendre import AbstractLegendre


class SeparableFields(eqx.Module):
    r"""The per-coordinate fields $X = \nabla\gamma$ and $Y = \nabla\eta$ of a
    separable pair, on parameters stacked as an array of shape `(n, p)` (column k is
    the pair's k-th leaf).

    Because g acts elementwise and h sums over coordinates, $X$ for every coordinate
    at once is the gradient of $\sum_i g_i$, and a Jacobian-vector product of X (or
    Y) along a field is the per-coordinate product.
    """

    pair: eqx.Module
    treedef: jax.tree_util.PyTreeDef = eqx.field(static=True)

    def params(self, z: Float[Array, "n p"]):
        """The pair's parameters (a pytree of `(n,)` leaves) from the stacked array."""
        return jax.tree_util.tree_unflatten(
            self.treedef, [z[..., k] for k in range(z.shape[-1])]
        )

    def g(self, z):
        return self.pair.g(self.params(z))

    def X(self, z):
        return jax.grad(lambda u: jnp.sum(self.g(u)))(z)

    def Y(self, z):
        return jax.grad(lambda u: self.pair.h(self.params(u)))(z)

    def _along(self, field, z, matrix):
        """`D field(z) @ matrix` per coordinate, `matrix` of shape `(n, p, q)`."""
        columns = [
            jax.jvp(field, (z,), (matrix[..., k],))[1] for k in range(matrix.shape[-1])
        ]
        return jnp.stack(columns, axis=-1)

    def dX(self, z, matrix):
        return self._along(self.X, z, matrix)

    def dY(self, z, matrix):
        return self._along(self.Y, z, matrix)

    def bracket_coefficient(self, z):
        r"""$c_i = \langle[X, Y], X\rangle / |X|^2$ per coordinate, and the residual
        $|[X, Y] - c_i X|$ relative to the size of the bracket's two terms.

        $[X, Y] = DY\,X - DX\,Y$, as `jm.lie_brackets` computes it."""
        X, Y = self.X(z), self.Y(z)
        first = jax.jvp(self.Y, (z,), (X,))[1]
        second = jax.jvp(self.X, (z,), (Y,))[1]
        bracket = first - second
        squared = jnp.sum(X * X, axis=-1)
        c = jnp.sum(bracket * X, axis=-1) / squared
        residual = jnp.linalg.norm(bracket - c[:, None] * X, axis=-1)
        size = jnp.linalg.norm(first, axis=-1) + jnp.linalg.norm(second, axis=-1)
        tiny = jnp.finfo(z.dtype).tiny
        return c, residual / jnp.maximum(size, tiny), squared


def _solve(field, state, tolerances):
    """Integrate `field` over s in [0, 1] from `state`; the end state and whether the
    solve succeeded (per solve, not per coordinate: the max norm makes every
    coordinate meet the tolerance)."""
    rtol, atol, max_steps = tolerances
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        diffrax.Dopri8(),
        0.0,
        1.0,
        None,
        state,
        stepsize_controller=diffrax.PIDController(
            rtol=rtol, atol=atol, norm=optx.max_norm
        ),
        max_steps=max_steps,
        # Forward mode through the loop: first derivatives come from the custom rules
        # below, whose orbits a second derivative (a Hessian-vector product of the
        # mirror formulation, a Newton step on the field) differentiates again.
        adjoint=diffrax.ForwardMode(),
        throw=False,
    )
    end = jax.tree_util.tree_map(lambda leaf: leaf[-1], solution.ys)
    return end, solution.result == diffrax.RESULTS.successful


@eqx.filter_jit
def descend(fields, w0, a, tolerances, jacobian=False):
    r"""$w_a = \Phi^Y_a(w_0)$ per coordinate (`a` of shape `(n,)`, usually $\le 0$:
    the flow of $-\nabla h$ for time $|a|$), and its Jacobian $K = \partial w_a /
    \partial w_0$ of shape `(n, p, p)` if asked; NaN where the solve failed."""
    state = {"z": w0}
    if jacobian:
        state["K"] = jnp.broadcast_to(
            jnp.eye(w0.shape[-1], dtype=w0.dtype), w0.shape + w0.shape[-1:]
        )

    def field(s, state, args):
        z = state["z"]
        out = {"z": a[:, None] * fields.Y(z)}
        if jacobian:
            out["K"] = a[:, None, None] * fields.dY(z, state["K"])
        return out

    end, ok = _solve(field, state, tolerances)
    return jax.tree_util.tree_map(lambda v: jnp.where(ok, v, jnp.nan), end)


@eqx.filter_jit
def orbit(
    fields, z0, length, tolerances, *, by_level=False, jacobian=False, integrals=False
):
    r"""Move each coordinate along X from `z0` (shape `(n, p)`).

    - `by_level=False`: for the flow time `length` ($\sigma$, shape `(n,)`);
    - `by_level=True`: until $\gamma$ has changed by `length` ($dz/dx = X/|X|^2$).

    **Returns** a dict: `z` (the end point), `sigma` (the flow time travelled); with
    `jacobian`, `J` $= \partial\Phi^X_\sigma/\partial z_0$ (`(n, p, p)`); with
    `integrals`, along the orbit $\int\gamma\,d\sigma$ (`Ig`), and with both
    $\int\langle X, Y\rangle d\sigma$ (`Ixy`) and $\int J^\top X\,d\sigma$ (`Iw`).
    NaN where the solve failed (an orbit that leaves the domain or blows up).
    """
    n, p = z0.shape
    state = {"z": z0, "sigma": jnp.zeros(n, z0.dtype)}
    if jacobian:
        state["J"] = jnp.broadcast_to(jnp.eye(p, dtype=z0.dtype), (n, p, p))
    if integrals:
        state["Ig"] = jnp.zeros(n, z0.dtype)
        if jacobian:
            state["Ixy"] = jnp.zeros(n, z0.dtype)
            state["Iw"] = jnp.zeros((n, p), z0.dtype)

    def field(s, state, args):
        z = state["z"]
        X = fields.X(z)
        speed = length / jnp.sum(X * X, axis=-1) if by_level else length
        out = {"z": speed[:, None] * X, "sigma": speed}
        if jacobian:
            out["J"] = speed[:, None, None] * fields.dX(z, state["J"])
        if integrals:
            out["Ig"] = speed * fields.g(z)
        if integrals and jacobian:
            out["Ixy"] = speed * jnp.sum(X * fields.Y(z), axis=-1)
            out["Iw"] = speed[:, None] * jnp.einsum("nqk,nq->nk", state["J"], X)
        return out

    end, ok = _solve(field, state, tolerances)
    return jax.tree_util.tree_map(lambda v: jnp.where(ok, v, jnp.nan), end)


def dense_tangents(primals, tangents):
    """The tangents of a `filter_custom_jvp` rule, with zeros where none was given."""
    return tuple(
        jnp.zeros_like(primal) if tangent is None else tangent
        for primal, tangent in zip(primals, tangents)
    )


def _matvec(matrix, vector):
    """Per coordinate: `(n, p, p) @ (n, p)`."""
    return jnp.einsum("npq,nq->np", matrix, vector)


@eqx.filter_custom_jvp
def flow_map(w0, kappa, theta, a, *, fields, tolerances):
    r"""$x = F(\theta, a)$, the inverse mirror map, per coordinate."""
    w_a = descend(fields, w0, a, tolerances)["z"]
    end = orbit(fields, w_a, theta * jnp.exp(-kappa * a), tolerances)
    return fields.g(end["z"])


@flow_map.def_jvp
def _flow_map_jvp(primals, tangents, *, fields, tolerances):
    w0, kappa, theta, a = primals
    dw0, _, dtheta, da = dense_tangents(primals, tangents)
    start = descend(fields, w0, a, tolerances, jacobian=True)
    shrink = jnp.exp(-kappa * a)
    sigma = theta * shrink
    end = orbit(fields, start["z"], sigma, tolerances, jacobian=True)
    z = end["z"]
    X = fields.X(z)
    # z = Phi^X_sigma(w_a): dz = J (K dw0 + Y(w_a) da) + X(z) dsigma.
    dw_a = _matvec(start["K"], dw0) + fields.Y(start["z"]) * da[:, None]
    dsigma = shrink * (dtheta - kappa * theta * da)
    dz = _matvec(end["J"], dw_a) + X * dsigma[:, None]
    return fields.g(z), jnp.sum(X * dz, axis=-1)


def to_level(fields, w0, x, a, tolerances, integrals=False):
    r"""The orbit from $w_a$ followed by level until $\gamma = x$ (no Jacobians)."""
    w_a = descend(fields, w0, a, tolerances)["z"]
    return orbit(
        fields, w_a, x - fields.g(w_a), tolerances, by_level=True, integrals=integrals
    )


@eqx.filter_custom_jvp
def mirror_map(w0, kappa, x, a, *, fields, tolerances):
    r"""$\tau = \nabla R_a(x)$: the orbit followed by level from $w_a$ to x."""
    return to_level(fields, w0, x, a, tolerances)["sigma"] * jnp.exp(kappa * a)


@mirror_map.def_jvp
def _mirror_map_jvp(primals, tangents, *, fields, tolerances):
    w0, kappa, x, a = primals
    dw0, _, dx, da = dense_tangents(primals, tangents)
    start = descend(fields, w0, a, tolerances, jacobian=True)
    end = orbit(
        fields,
        start["z"],
        x - fields.g(start["z"]),
        tolerances,
        by_level=True,
        jacobian=True,
    )
    grow = jnp.exp(kappa * a)
    tau = end["sigma"] * grow
    X = fields.X(end["z"])
    # x = g(Phi^X_sigma(w_a)) with sigma = tau e^{-kappa a}, solved for d tau.
    dw_a = _matvec(start["K"], dw0) + fields.Y(start["z"]) * da[:, None]
    moved = jnp.sum(X * _matvec(end["J"], dw_a), axis=-1)
    dsigma = (dx - moved) / jnp.sum(X * X, axis=-1)
    return tau, grow * dsigma + kappa * tau * da


def _conjugate_terms(fields, w0, kappa, theta, a, tolerances, by_level):
    """The orbit with its integrals, from $w_a$, by flow time or by level."""
    start = descend(fields, w0, a, tolerances, jacobian=True)
    length = theta - fields.g(start["z"]) if by_level else theta * jnp.exp(-kappa * a)
    end = orbit(
        fields,
        start["z"],
        length,
        tolerances,
        by_level=by_level,
        jacobian=True,
        integrals=True,
    )
    grow = jnp.exp(kappa * a)
    # dR*/da at fixed tau = int F_a ds = e^{kappa a} int <X, Y> dsigma; dR*/dw0 =
    # e^{kappa a} K^T int J^T X dsigma.
    partial_a = grow * end["Ixy"]
    partial_w = grow[:, None] * jnp.einsum("nqk,nq->nk", start["K"], end["Iw"])
    return end, grow, partial_a, partial_w


@eqx.filter_custom_jvp
def conjugate_value(w0, kappa, theta, a, *, fields, tolerances):
    r"""$R^*_a(\theta) = \sum_i\int_0^{\theta_i} F_i(s, a)\,ds$."""
    w_a = descend(fields, w0, a, tolerances)["z"]
    end = orbit(fields, w_a, theta * jnp.exp(-kappa * a), tolerances, integrals=True)
    return jnp.sum(jnp.exp(kappa * a) * end["Ig"])


@conjugate_value.def_jvp
def _conjugate_value_jvp(primals, tangents, *, fields, tolerances):
    w0, kappa, theta, a = primals
    dw0, _, dtheta, da = dense_tangents(primals, tangents)
    end, grow, partial_a, partial_w = _conjugate_terms(
        fields, w0, kappa, theta, a, tolerances, by_level=False
    )
    x = fields.g(end["z"])
    tangent = jnp.sum(x * dtheta + partial_a * da) + jnp.sum(partial_w * dw0)
    return jnp.sum(grow * end["Ig"]), tangent


@eqx.filter_custom_jvp
def legendre_value(w0, kappa, x, a, *, fields, tolerances):
    r"""$R_a(x) = \langle\tau, x\rangle - R^*_a(\tau)$ at $\tau = \nabla R_a(x)$."""
    end = to_level(fields, w0, x, a, tolerances, integrals=True)
    return jnp.sum(jnp.exp(kappa * a) * (end["sigma"] * x - end["Ig"]))


@legendre_value.def_jvp
def _legendre_value_jvp(primals, tangents, *, fields, tolerances):
    w0, kappa, x, a = primals
    dw0, _, dx, da = dense_tangents(primals, tangents)
    end, grow, partial_a, partial_w = _conjugate_terms(
        fields, w0, kappa, x, a, tolerances, by_level=True
    )
    tau = grow * end["sigma"]
    # Envelope theorem: dR = tau dx - dR*/da da - dR*/dw0 dw0 at fixed tau.
    tangent = jnp.sum(tau * dx - partial_a * da) - jnp.sum(partial_w * dw0)
    return jnp.sum(tau * x - grow * end["Ig"]), tangent


class FlowLegendre(AbstractLegendre):
    r"""The time-varying Legendre function of a separable pair, by its flows.

    See the module docstring for the construction and its normalisation
    ($\nabla R_0(x_0) = 0$). Built by `AbstractSeparablePair.legendre(w0)`.

    **Fields:**

    - `fields`: the pair's per-coordinate gradient fields.
    - `w0`: the initialisation, stacked as `(n, p)`.
    - `kappa`: $\kappa = -c$, the clock's rate: $\kappa(a) = e^{\kappa a}$.
    - `rtol`, `atol`, `max_steps`: the orbits' tolerances and step cap (static).
    """

    fields: SeparableFields
    w0: Float[Array, "n p"]
    kappa: Float[Array, ""]
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)

    cancels_in_theta: ClassVar[bool] = False

    @property
    def tolerances(self) -> tuple[float, float, int]:
        """`(rtol, atol, max_steps)` of the orbits."""
        return (self.rtol, self.atol, self.max_steps)

    def times(self, a):
        """The Legendre time `a` (scalar or per coordinate) as one value per coordinate."""
        return jnp.broadcast_to(jnp.asarray(a, self.w0.dtype), self.w0.shape[:1])

    def _call(self, function, value, a):
        return function(
            self.w0,
            self.kappa,
            value,
            self.times(a),
            fields=self.fields,
            tolerances=self.tolerances,
        )

    def time_scale(self, a):
        return jnp.exp(self.kappa * jnp.asarray(a))

    def grad(self, x, a):
        return self._call(mirror_map, x, a)

    def grad_inverse(self, theta, a):
        return self._call(flow_map, theta, a)

    def value(self, x, a):
        return self._call(legendre_value, x, a)

    def conjugate(self, theta, a):
        return self._call(conjugate_value, theta, a)

    def hessian_diag(self, x, a):
        r"""$\nabla^2 R_a(x)_{ii} = \partial\tau_i/\partial x_i = e^{\kappa a}/|X(z_i)|^2$
        at the point $z_i$ of the orbit where $\gamma = x_i$."""
        a = self.times(a)
        end = to_level(self.fields, self.w0, x, a, self.tolerances)
        X = self.fields.X(end["z"])
        return jnp.exp(self.kappa * a) / jnp.sum(X * X, axis=-1)
