r"""Time-varying Legendre functions $R_a$ of the diagonal pairs, in closed form.

Every function here is separable, $R_a(x) = \sum_i r_a(x_i)$, so its Hessian is diagonal.
`a` is the Legendre time variable $a_t = -\int_0^t \alpha_s ds \le 0$; it is an array
(traced, vmappable). The mirror (dual) coordinate is $\theta = \nabla R_a(x)$.

Numerical care: the scale of the Hadamard and difference-of-squares potentials,
$c_a = c_0 e^{2a}$, is stored and used as $\log c_a$, so initial scales from $10^{-30}$ to
$10^{3}$ and long weight-decay phases never underflow; `arcsinh(x / c)` and
`c sinh(k theta)` are evaluated in log space where the direct formulas would overflow.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._custom_types import Point, Scalar


_LOG2 = float(np.log(2.0))


class AbstractLegendre(eqx.Module):
    r"""A time-varying, separable Legendre function $R_a(x)$, with a clock.

    The mirror flow it defines is
    $$\frac{d}{dt}\nabla R_{a_t}(x_t) = -\kappa(a_t)\,\nabla f(x_t),$$
    with the time scale $\kappa(a) = $ `time_scale(a)`: 1 for the pairs whose Lie
    brackets with $\nabla h$ vanish (`Hadamard`, `DiffSquares`, `Square`, matched
    `PowerDifference`), and $e^{c a}$ for pairs whose brackets are proportional,
    $[\nabla g_i, \nabla h] = c\,\nabla g_i$ (`PowerDifference(L, "l2")`,
    `LogDifference`), where weight decay also runs the clock faster or slower.
    """

    def time_scale(self, a: ArrayLike) -> Array:
        r"""The clock $\kappa(a) > 0$ of the mirror flow (default 1)."""
        return jnp.ones_like(jnp.asarray(a))

    def dual_amplification(self, a: ArrayLike) -> Array:
        r"""How many times more an error of $\theta$ is amplified in x at Legendre
        time `a` than $|\theta|$ already amplifies it (default 1: the closed forms
        are evaluated without cancellation, the hyperbolic entropy in log space).
        Where it is large, the dual and row-space flows lose x's accuracy."""
        return jnp.ones_like(jnp.asarray(a))

    @property
    def cancels_in_theta(self) -> bool:
        r"""Whether $(\nabla R_a)^{-1}(\theta)$ cancels where x is large (default
        False). Then points of the limit can lie closer to the boundary of the
        $\theta$-domain than $\theta$'s rounding, and `jm.implicit_bias` solves
        for x itself rather than for the dual multiplier."""
        return False

    def value(self, x: Point, a: ArrayLike) -> Scalar:
        r"""$R_a(x) = \langle\theta, x\rangle - R_a^*(\theta)$ at $\theta = \nabla R_a(x)$
        (Fenchel-Young with equality); override where a direct form is cheaper."""
        theta = self.grad(x, a)
        return jnp.sum(theta * x) - self.conjugate(theta, a)

    @abc.abstractmethod
    def grad(self, x: Point, a: ArrayLike) -> Point:
        r"""The mirror map $\theta = \nabla R_a(x)$."""

    @abc.abstractmethod
    def grad_inverse(self, theta: Point, a: ArrayLike) -> Point:
        r"""The inverse mirror map $x = (\nabla R_a)^{-1}(\theta) = \nabla R_a^*(\theta)$."""

    @abc.abstractmethod
    def hessian_diag(self, x: Point, a: ArrayLike) -> Point:
        r"""The diagonal of $\nabla^2 R_a(x)$."""

    @abc.abstractmethod
    def conjugate(self, theta: Point, a: ArrayLike) -> Scalar:
        r"""The convex conjugate $R_a^*(\theta) = \sup_x \langle\theta, x\rangle - R_a(x)$."""


def _arcsinh_ratio(x: Array, log_c: Array) -> Array:
    r"""$\operatorname{arcsinh}(x / c)$ for $c = e^{\log c}$, finite for any $c > 0$."""
    nonzero = x != 0
    x_safe = jnp.where(nonzero, x, 1.0)
    t = jnp.log(jnp.abs(x_safe)) - log_c  # log|x / c|
    far = nonzero & (t > 0)
    t_far = jnp.where(far, t, 1.0)
    # For |z| > 1: arcsinh|z| = log|z| + log(1 + sqrt(1 + 1/z^2)), no overflow.
    value_far = jnp.sign(x) * (t_far + jnp.log1p(jnp.sqrt(1.0 + jnp.exp(-2.0 * t_far))))
    # For |z| <= 1: x * e^{-log c} while e^{-log c} is finite, else via logs. (Not
    # x / c: its derivative in c, -x / c^2, underflows to NaN for c < 1e-154.)
    representable = log_c > -700.0
    inv_c = jnp.exp(-jnp.where(representable, log_c, 0.0))
    ratio = jnp.where(
        representable, x * inv_c, jnp.sign(x) * jnp.exp(jnp.minimum(t, 0.0))
    )
    value_near = jnp.arcsinh(jnp.where(far, 0.0, ratio))
    return jnp.where(far, value_far, value_near)


def _half_exp_and_cosh_factor(s: Array, log_c: Array) -> tuple[Array, Array, Array]:
    r"""$\tfrac c2 e^{|s|}$ and $1 + e^{-2|s|} = 2 / (1 + \tanh|s|)$, with $\tanh|s|$:
    the transcendental factors that $c\sinh s$ and $c\cosh s$ share."""
    magnitude = jnp.abs(s)
    tanh = jnp.tanh(magnitude)
    return jnp.exp(magnitude + log_c - _LOG2), 2.0 / (1.0 + tanh), tanh


@jax.custom_jvp
def _scaled_sinh(s: Array, log_c: Array) -> Array:
    r"""$c \sinh(s)$ for $c = e^{\log c}$, finite wherever the product is representable.

    One branch for every $s$:
    $$c\sinh|s| = e^{|s| + \log c - \log 2}\,(1 - e^{-2|s|}), \qquad
    1 - e^{-2|s|} = \frac{2\tanh|s|}{1 + \tanh|s|},$$
    accurate to a few ulps from $|s| = 0$ to overflow (the relative error of
    $e^{|s| + \log c}$ is that of its argument; $\tanh$ keeps the second factor's
    relative accuracy as $|s| \to 0$, as `expm1` would). It is the hot spot of the
    dual vector fields, so it uses two transcendental functions, the cheapest pair
    (on XLA:CPU, float64: `tanh` costs about one `exp`, `expm1` two), and no `where`
    (which would evaluate both branches of a two-branch formula).
    """
    half_exp, cosh_factor, tanh = _half_exp_and_cosh_factor(s, log_c)
    return jnp.copysign(half_exp * tanh * cosh_factor, s)


@_scaled_sinh.defjvp
def _scaled_sinh_jvp(primals, tangents):
    # The formula above has the derivative 0 at s = 0 (through sign and |s|); the true
    # derivative in s is c cosh(s) = (c/2) e^{|s|} (1 + e^{-2|s|}), and in log c it
    # is the value itself. Both reuse the value's transcendental factors.
    s, log_c = primals
    ds, dlog_c = tangents
    half_exp, cosh_factor, tanh = _half_exp_and_cosh_factor(s, log_c)
    cosh = half_exp * cosh_factor
    value = jnp.copysign(cosh * tanh, s)
    return value, cosh * ds + value * dlog_c


class HyperbolicEntropy(AbstractLegendre):
    r"""The hyperbolic entropy with a shrinking scale.

    $$R_a(x) = \frac1k \sum_i \Big[x_i \operatorname{arcsinh}\frac{x_i}{c_{a,i}}
        - \sqrt{x_i^2 + c_{a,i}^2}\Big], \qquad c_{a} = c_0 e^{2a},$$

    $$\nabla R_a(x) = \frac1k \operatorname{arcsinh}\frac{x}{c_a}, \quad
    (\nabla R_a)^{-1}(\theta) = c_a \sinh(k\theta), \quad
    \nabla^2 R_a(x) = \frac{1}{k\sqrt{x^2 + c_a^2}}, \quad
    R_a^*(\theta) = \frac1k \sum_i c_{a,i}\cosh(k\theta_i).$$

    It behaves like a weighted $L_2$ norm where $|x| \ll c_a$ and like an $L_1$ norm
    where $|x| \gg c_a$: weight decay ($a$ decreasing) shrinks $c_a$ and moves the bias
    from $L_2$ to $L_1$ type. `Hadamard` gives $k = 2$, $c_0 = |m_0^2 - w_0^2| / 2$;
    `DiffSquares` gives $k = 4$, $c_0 = 2|u_0 v_0|$.

    **Arguments:**

    - `log_c0`: $\log c_0$ per coordinate (finite).
    - `k`: the curvature constant (static).
    """

    log_c0: Float[Array, "*batch n"]
    k: float = eqx.field(static=True)

    def log_scale(self, a: ArrayLike) -> Point:
        r"""$\log c_a = \log c_0 + 2a$."""
        return self.log_c0 + 2.0 * jnp.asarray(a)

    def scale(self, a: ArrayLike) -> Point:
        r"""$c_a = c_0 e^{2a}$ (may underflow to 0; use `log_scale` for computation)."""
        return jnp.exp(self.log_scale(a))

    def value(self, x, a):
        c = self.scale(a)
        return jnp.sum(x * self.grad(x, a) - jnp.hypot(x, c) / self.k)

    def grad(self, x, a):
        return _arcsinh_ratio(x, self.log_scale(a)) / self.k

    def grad_inverse(self, theta, a):
        return _scaled_sinh(self.k * theta, self.log_scale(a))

    def hessian_diag(self, x, a):
        return 1.0 / (self.k * jnp.hypot(x, self.scale(a)))

    def conjugate(self, theta, a):
        x = self.grad_inverse(theta, a)
        return jnp.sum(jnp.hypot(x, self.scale(a))) / self.k


class ShiftedEntropy(AbstractLegendre):
    r"""The entropy of the square pair, shifted linearly by $a$ (domain $x > 0$).

    $$R_a(x) = \sum_i \Big[\tfrac14 (x_i \log x_i - x_i) - \tfrac{a}{2} x_i\Big],\quad
    \nabla R_a(x) = \tfrac14 \log x - \tfrac a2,\quad
    (\nabla R_a)^{-1}(\theta) = e^{4\theta + 2a},$$

    $\nabla^2 R_a(x) = 1/(4x)$ and $R_a^*(\theta) = \tfrac14\sum_i e^{4\theta_i + 2a}$.
    Weight decay only moves the centre ($\hat x_a = x_0 e^{2a}$); the type of bias stays.
    """

    def value(self, x, a):
        return jnp.sum(0.25 * (x * jnp.log(x) - x) - 0.5 * jnp.asarray(a) * x)

    def grad(self, x, a):
        return 0.25 * jnp.log(x) - 0.5 * jnp.asarray(a)

    def grad_inverse(self, theta, a):
        return jnp.exp(4.0 * theta + 2.0 * jnp.asarray(a))

    def hessian_diag(self, x, a):
        del a  # the Hessian of the square pair does not depend on a
        return 0.25 / x

    def conjugate(self, theta, a):
        return 0.25 * jnp.sum(self.grad_inverse(theta, a))


class PowerEntropy(AbstractLegendre):
    r"""The time-varying Legendre function of the depth-L pair $x = u^L - v^L$ ($L > 2$).

    Along the flow $u^{2-L}$ and $v^{2-L}$ are affine in the mirror coordinate
    $\theta$ and in $a$. With $k = L/(L-2)$,
    $$P = p_0 - (L-2)(L\theta + b\,a),\qquad Q = q_0 + (L-2)(L\theta - b\,a),\qquad
    (\nabla R_a)^{-1}(\theta) = e^{m a}\big(P^{-k} - Q^{-k}\big),$$
    on the interval $P, Q > 0$, where $p_0 = u_0^{2-L}$, $q_0 = v_0^{2-L}$, and
    $$R_a^*(\theta) = \frac{e^{m a}}{2L}\big(P^{-2/(L-2)} + Q^{-2/(L-2)}\big),\qquad
    \nabla^2 R_a(x)^{-1} = e^{m a}\,kL(L-2)\big(P^{-k-1} + Q^{-k-1}\big).$$

    - matched weight decay $h = \tfrac1L\sum|u_i|^L + |v_i|^L$: $b = 1$, $m = 0$,
      clock 1 (the brackets vanish);
    - plain weight decay $h = \tfrac12(|u|^2 + |v|^2)$: $b = 0$, $m = L$, clock
      $e^{(L-2)a}$ ($[\nabla g_i, \nabla h] = (2-L)\nabla g_i$): $x_t = e^{La_t}F(\theta_t)$
      with the unregularized map $F$, and time slowed by $e^{(L-2)a_t}$.

    At $a = 0$ this is Woodworth et al.'s (2020) depth-L potential (see
    `jaxmirror.conventions`). $\nabla R_a(x)$ has no closed form: it is found by a
    monotone Newton iteration on $r = P/(P+Q)$ (whose last step is differentiated).

    **Arguments:**

    - `p0`, `q0`: $u_0^{2-L}$ and $v_0^{2-L}$ per coordinate (finite, > 0).
    - `depth`: $L \ge 3$ (static).
    - `matched`: whether the weight decay is the matched one (static).
    """

    p0: Float[Array, "*batch n"]
    q0: Float[Array, "*batch n"]
    depth: int = eqx.field(static=True)
    matched: bool = eqx.field(static=True)

    @property
    def _k(self) -> float:
        return self.depth / (self.depth - 2.0)

    def _shifts(self, a):
        """$(m a, b a)$: the log-magnitude shift and the affine shift of P and Q."""
        a = jnp.asarray(a)
        if self.matched:
            return jnp.zeros_like(a), a
        return self.depth * a, jnp.zeros_like(a)

    def _pq(self, theta, a):
        _, shift = self._shifts(a)
        c = self.depth - 2.0
        return (
            self.p0 - c * (self.depth * theta + shift),
            self.q0 + c * (self.depth * theta - shift),
        )

    def time_scale(self, a):
        if self.matched:
            return jnp.ones_like(jnp.asarray(a))
        return jnp.exp((self.depth - 2.0) * jnp.asarray(a))

    def dual_amplification(self, a):
        r"""With plain weight decay, a point of unit size at $a$ needs $P \approx
        e^{(L-2)a}$, the difference of $p_0 = u_0^{2-L}$ and $(L-2)L\theta$: an error
        $\epsilon p_0$ there moves x by $k\,p_0 e^{-(L-2)a}\epsilon$ (measured at
        L = 3 and 4, $a$ from -1 to -10: within a factor 5 of the row-space flow's
        drift). Matched weight decay shifts P and Q instead: no cancellation."""
        a = jnp.asarray(a)
        if self.matched:
            return jnp.ones_like(a)
        scale = jnp.maximum(jnp.max(self.p0), jnp.max(self.q0))
        return self._k * scale * jnp.exp(-(self.depth - 2.0) * a)

    @property
    def cancels_in_theta(self) -> bool:
        """With plain weight decay a point of unit size at $a$ has $P \approx
        e^{(L-2)a}$: at $a = -20$ (L = 4) 1e-18 of $p_0$, below $\theta$'s rounding."""
        return not self.matched

    def grad_inverse(self, theta, a):
        P, Q = self._pq(theta, a)
        inside = (P > 0) & (Q > 0)
        P, Q = jnp.where(inside, P, 1.0), jnp.where(inside, Q, 1.0)
        x = jnp.exp(self._shifts(a)[0]) * (P**-self._k - Q**-self._k)
        return jnp.where(inside, x, jnp.nan)  # outside the domain: a rejected step

    def _pq_at(self, x, a):
        r"""$P$ and $Q$ at the point x, the smaller of the two formed without
        cancellation ($\rho S$ with $\rho = \min(r, 1 - r)$, $r = P/(P + Q)$)."""
        log_m, shift = self._shifts(a)
        S = self.p0 + self.q0 - 2.0 * (self.depth - 2.0) * shift
        k = self._k
        eta = x * jnp.exp(-log_m) * S**k  # r^{-k} - (1 - r)^{-k} = eta
        # By symmetry solve for rho = min(r, 1 - r) in (0, 1/2] with |eta|: there
        # G(rho) = rho^{-k} - (1 - rho)^{-k} - |eta| is convex and decreasing, so
        # Newton from the left, where G >= 0, increases monotonically to the root;
        # the start lies within a factor 2 of it, so a dozen steps reach rounding.
        e = jax.lax.stop_gradient(jnp.abs(eta))
        rho = (e + 2.0**k) ** (-1.0 / k)

        def newton(_, rho):
            G = rho**-k - (1.0 - rho) ** -k - e
            dG = -k * (rho ** (-k - 1.0) + (1.0 - rho) ** (-k - 1.0))
            return jnp.clip(rho - G / dG, rho, 0.5)

        rho = jax.lax.fori_loop(0, 16, newton, rho)
        small, large = rho * S, (1.0 - rho) * S
        return jnp.where(eta >= 0, small, large), jnp.where(eta >= 0, large, small)

    def grad(self, x, a):
        c, k = self.depth - 2.0, self._k
        P, Q = jax.lax.stop_gradient(self._pq_at(x, a))
        log_m, shift = self._shifts(a)
        # c L theta = p0 - c shift - P = Q - q0 + c shift: from the smaller of P, Q.
        scaled = jnp.where(P <= Q, self.p0 - c * shift - P, Q - self.q0 + c * shift)
        theta = jax.lax.stop_gradient(scaled / (c * self.depth))
        # Derivatives by the implicit function theorem, d theta = (dx - dx/da da) /
        # (dx/dtheta), with every factor from P and Q: near the boundary of the
        # theta-domain, they round away if formed from theta.
        magnitude = jnp.exp(log_m)
        dx_dtheta = magnitude * k * self.depth * c * (P ** (-k - 1.0) + Q ** (-k - 1.0))
        if self.matched:  # P and Q shift with a: dP/da = dQ/da = -c
            dx_da = magnitude * k * c * (P ** (-k - 1.0) - Q ** (-k - 1.0))
        else:  # x = e^{La} F(theta)
            dx_da = self.depth * x
        # ... and in the initialisation: dx/dp0 = -k e^{ma} P^{-k-1}, dx/dq0 =
        # k e^{ma} Q^{-k-1} (found missing by the automatic map's derivative).
        dx_dp0 = -magnitude * k * P ** (-k - 1.0)
        dx_dq0 = magnitude * k * Q ** (-k - 1.0)

        def moved(value, slope):
            value = jnp.broadcast_to(jnp.asarray(value, theta.dtype), theta.shape)
            return jax.lax.stop_gradient(slope) * (value - jax.lax.stop_gradient(value))

        tangent = (
            (x - jax.lax.stop_gradient(x))
            - moved(a, dx_da)
            - moved(self.p0, dx_dp0)
            - moved(self.q0, dx_dq0)
        )
        return theta + tangent / jax.lax.stop_gradient(dx_dtheta)

    def hessian_diag(self, x, a):
        P, Q = self._pq_at(x, a)
        c, k = self.depth - 2.0, self._k
        slope = jnp.exp(self._shifts(a)[0]) * k * self.depth * c
        return 1.0 / (slope * (P ** (-k - 1.0) + Q ** (-k - 1.0)))

    def conjugate(self, theta, a):
        P, Q = self._pq(theta, a)
        inside = jnp.all((P > 0) & (Q > 0))
        P, Q = jnp.where(P > 0, P, 1.0), jnp.where(Q > 0, Q, 1.0)
        power = -2.0 / (self.depth - 2.0)
        terms = jnp.exp(self._shifts(a)[0]) * (P**power + Q**power) / (2 * self.depth)
        return jnp.where(inside, jnp.sum(terms), jnp.inf)


class LogisticEntropy(AbstractLegendre):
    r"""The Legendre function of the logarithmic pair $x = \log u - \log v$.

    With $s_0 = u_0^2 + v_0^2$ and $c = s_0/2$, the mirror coordinate
    $\theta = \tfrac{s_0}{2}\,\sigma(2x) \in (0, c)$ ($\sigma$ the logistic function):
    $$\nabla R(x) = c\,\sigma(2x),\quad (\nabla R)^{-1}(\theta) =
    \tfrac12\log\frac{\theta}{c - \theta},\quad
    R^*(\theta) = \tfrac12\big[\theta\log\theta + (c - \theta)\log(c - \theta)\big],$$
    a Fermi-Dirac entropy that does not depend on $a$: weight decay acts on the clock
    only, $\kappa(a) = e^{-2a} \ge 1$. In the natural coordinate $u^2/2 = e^{2a}\theta$
    the range $(0, s_0 e^{2a}/2)$ shrinks with weight decay (see `LogDifference`).

    **Arguments:**

    - `log_s0`: $\log(u_0^2 + v_0^2)$ per coordinate.
    """

    log_s0: Float[Array, "*batch n"]

    def _half_width(self):
        return 0.5 * jnp.exp(self.log_s0)

    def time_scale(self, a):
        return jnp.exp(-2.0 * jnp.asarray(a))

    def grad(self, x, a):
        del a  # the geometry does not change; weight decay only runs the clock
        return self._half_width() * jax.nn.sigmoid(2.0 * x)

    def grad_inverse(self, theta, a):
        del a
        c = self._half_width()
        inside = (theta > 0) & (theta < c)
        x = 0.5 * (jnp.log(theta) - jnp.log(c - theta))
        return jnp.where(inside, x, jnp.nan)  # outside the domain: a rejected step

    def hessian_diag(self, x, a):
        del a
        return 2.0 * self._half_width() * jax.nn.sigmoid(2 * x) * jax.nn.sigmoid(-2 * x)

    def conjugate(self, theta, a):
        del a
        c = self._half_width()
        inside = jnp.all((theta > 0) & (theta < c))
        t = jnp.clip(theta, 0.0, c)
        terms = 0.5 * (
            jax.scipy.special.xlogy(t, t) + jax.scipy.special.xlogy(c - t, c - t)
        )
        return jnp.where(inside, jnp.sum(terms), jnp.inf)
