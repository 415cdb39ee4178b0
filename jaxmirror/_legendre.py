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
    r"""A time-varying, separable Legendre function $R_a(x)$.

    The mirror flow it defines is $\frac{d}{dt}\nabla R_{a_t}(x_t) = -\nabla f(x_t)$.
    """

    @abc.abstractmethod
    def value(self, x: Point, a: ArrayLike) -> Scalar:
        r"""$R_a(x)$."""

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


def _half_exp_and_expm1(s: Array, log_c: Array) -> tuple[Array, Array]:
    r"""$\tfrac c2 e^{|s|}$ and $e^{-2|s|} - 1$: the two transcendental factors that
    $c\sinh s$ and $c\cosh s$ share."""
    magnitude = jnp.abs(s)
    return jnp.exp(magnitude + log_c - _LOG2), jnp.expm1(-2.0 * magnitude)


@jax.custom_jvp
def _scaled_sinh(s: Array, log_c: Array) -> Array:
    r"""$c \sinh(s)$ for $c = e^{\log c}$, finite wherever the product is representable.

    One branch for every $s$: $c\sinh|s| = e^{|s| + \log c - \log 2}\,(1 - e^{-2|s|})$,
    with `expm1` for the second factor, is accurate to a few ulps from $|s| = 0$ to
    overflow (the relative error of $e^{|s| + \log c}$ is that of its argument). It is
    the hot spot of the dual vector fields, so it uses two transcendental functions and
    no `where` (which would evaluate both branches of a two-branch formula).
    """
    half_exp, expm1 = _half_exp_and_expm1(s, log_c)
    return jnp.copysign(half_exp * -expm1, s)


@_scaled_sinh.defjvp
def _scaled_sinh_jvp(primals, tangents):
    # The formula above has the derivative 0 at s = 0 (through sign and |s|); the true
    # derivative in s is c cosh(s) = (c/2) e^{|s|} (2 + expm1(-2|s|)), and in log c it
    # is the value itself. Both reuse the value's two transcendental factors.
    s, log_c = primals
    ds, dlog_c = tangents
    half_exp, expm1 = _half_exp_and_expm1(s, log_c)
    value = jnp.copysign(half_exp * -expm1, s)
    return value, half_exp * (2.0 + expm1) * ds + value * dlog_c


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
