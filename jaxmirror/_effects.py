r"""Diagnostics for two of the three effects of regularization on the implicit bias.

**Positional bias.** The limit minimises $R_{a_\infty}(x) - \langle\nabla R_0(x_0), x\rangle
= D_{R_{a_\infty}}(x, \hat x) + \text{const}$, a Bregman divergence from the centre
$$\hat x(a) = (\nabla R_a)^{-1}\big(\nabla R_0(x_0)\big).$$
Weight decay moves it towards 0 (`Hadamard`: $\hat x = x_0 e^{2a}$).

**Type of bias.** The effective exponent of $R_a$ around the centre,
$$p(x; a) = 1 + \frac{\sum_i \nabla^2 R_a(x)_{ii}\,(x_i - \hat x_i)^2}
{\sum_i (\nabla R_a(x)_i - \nabla R_a(\hat x)_i)(x_i - \hat x_i)},$$
equals $q$ for $R = |x|^q/q$ around 0: $p \approx 2$ is an $L_2$-type bias and
$p \to 1$ an $L_1$-type (sparsity-inducing) bias. For the hyperbolic entropy around 0,
$p = 1 + |x|/(\sqrt{x^2 + c_a^2}\operatorname{arcsinh}(|x|/c_a))$ per coordinate, so
shrinking $c_a$ (weight decay) turns $L_2$ into $L_1$.
"""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ._legendre import AbstractLegendre


def positional_bias_centre(
    legendre: AbstractLegendre, x0: Float[Array, " n"], a: ArrayLike
) -> Float[Array, " n"]:
    r"""The centre $\hat x(a) = (\nabla R_a)^{-1}(\nabla R_0(x_0))$ of the implicit bias."""
    a = jnp.asarray(a)
    return legendre.grad_inverse(legendre.grad(x0, jnp.zeros_like(a)), a)


def type_of_bias(
    legendre: AbstractLegendre,
    x0: Float[Array, " n"],
    x: Float[Array, " n"],
    a: ArrayLike,
) -> Float[Array, ""]:
    r"""The effective exponent $p(x; a)\in[1, \infty)$ of $R_a$ around $\hat x(a)$.

    $p \approx 2$: $L_2$-like bias; $p \to 1$: $L_1$-like. See the module docstring.
    """
    a = jnp.asarray(a)
    centre = positional_bias_centre(legendre, x0, a)
    dx = x - centre
    curvature = jnp.sum(legendre.hessian_diag(x, a) * dx**2)
    secant = jnp.sum((legendre.grad(x, a) - legendre.grad(centre, a)) * dx)
    return 1.0 + curvature / secant
