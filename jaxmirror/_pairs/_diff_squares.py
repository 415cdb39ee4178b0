r"""The difference-of-squares pair $x = u \odot u - v \odot v$."""

import jax.numpy as jnp

from .._legendre import HyperbolicEntropy
from .._validation import as_float_array, check, check_finite, check_positive
from ._base import AbstractClosedFormPair


class DiffSquares(AbstractClosedFormPair):
    r"""The pair $x = u^2 - v^2$, $h(u, v) = \tfrac12(|u|^2 + |v|^2)$.

    Parameters are the tuple `(u, v)`. Under the flow $p = u v$ decays as
    $p_t = p_0 e^{2a_t}$ and $x_t$ is the mirror flow of the `HyperbolicEntropy` with
    $k = 4$ and $c_a = 2|p_a|$:
    $$\nabla R_a(x) = \tfrac14\operatorname{arcsinh}\frac{x}{2|p_a|},\qquad
    \dot x = -4\sqrt{x^2 + 4p_{a_t}^2}\,\nabla f(x) - 2\alpha_t x.$$
    With constant $\alpha$ the flow minimises $f(x) + \tfrac{\alpha}{2}|x|_1$.

    **Initialisation convention** (`init(x0, scale)`): $u_0^2 - v_0^2 = x_0$ and
    $u_0 v_0 = \text{scale}^2$ with $u_0, v_0 > 0$. At $x_0 = 0$ this is
    $u_0 = v_0 = $ scale, exactly Woodworth et al.'s (2020) initialisation with
    $\alpha = $ scale, whose limit at zero weight decay minimises their $Q_\alpha$ (our
    $R_0$ is $Q_\alpha/4$ up to a constant).
    """

    def g(self, w):
        u, v = w
        return u * u - v * v

    def h(self, w):
        u, v = w
        return 0.5 * (jnp.sum(u**2) + jnp.sum(v**2))

    def init(self, x0, scale=1.0):
        r"""Parameters `(u0, v0)` with $u_0^2 - v_0^2 = x_0$, $u_0 v_0 = \text{scale}^2$.

        **Arguments:**

        - `x0`: the initial model point, shape `(n,)`.
        - `scale`: $> 0$, scalar or shape `(n,)`.
        """
        x0 = check_finite("x0", as_float_array(x0))
        if x0.ndim != 1:
            raise ValueError(
                f"`x0` must be a vector of shape (n,), got shape {x0.shape}."
            )
        scale = check_positive("scale", as_float_array(scale))
        p0 = jnp.broadcast_to(scale**2, x0.shape)
        root = jnp.hypot(x0, 2.0 * p0)
        # u0^2 is the positive root of t^2 - x0 t - p0^2; the second form avoids
        # cancellation when x0 < 0.
        u0_sq = jnp.where(x0 >= 0, 0.5 * (x0 + root), 2.0 * p0**2 / (root - x0))
        u0 = jnp.sqrt(u0_sq)
        return (u0, p0 / u0)

    def legendre(self, w0):
        u, v = w0
        p0 = check(
            "w0",
            u * v,
            lambda p: p != 0,
            "a non-degenerate initialisation for DiffSquares (u0 * v0 != 0 in every "
            "coordinate). Use `DiffSquares().init(x0, scale)` with scale > 0, or "
            "formulation='parameter'",
        )
        return HyperbolicEntropy(log_c0=jnp.log(2.0 * jnp.abs(p0)), k=4.0)

    def penalty(self, x):
        return 0.5 * jnp.sum(jnp.abs(x))

    def penalty_prox(self, z, step):
        return jnp.sign(z) * jnp.maximum(jnp.abs(z) - 0.5 * step, 0.0)
