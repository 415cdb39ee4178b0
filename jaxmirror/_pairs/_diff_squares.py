r"""The difference-of-squares pair $x = u \odot u - v \odot v$."""

import jax.numpy as jnp

from .._checking import check, check_point, check_scale
from .._legendre import HyperbolicEntropy
from ._base import AbstractMirrorDescentPair, AbstractPenalisedPair


class DiffSquares(AbstractMirrorDescentPair, AbstractPenalisedPair):
    r"""The pair $x = u^2 - v^2$, $h(u, v) = \tfrac12(|u|^2 + |v|^2)$.

    Parameters are the tuple `(u, v)`. Under the flow $p = u v$ decays as
    $p_t = p_0 e^{2a_t}$ and $x_t$ is the mirror flow of the `HyperbolicEntropy` with
    $k = 4$ and $c_a = 2|p_a|$:
    $$\nabla R_a(x) = \tfrac14\operatorname{arcsinh}\frac{x}{2|p_a|},\qquad
    \dot x = -4\sqrt{x^2 + 4p_{a_t}^2}\,\nabla f(x) - 2\alpha_t x.$$

    **Induced penalty.** $\rho(x) = \min\{h : u^2 - v^2 = x\} = \tfrac12|x|_1$, so
    constant weight decay $\alpha$ leads to $\min_x f(x) + \tfrac{\alpha}{2}|x|_1$.

    **Discrete steps.** Gradient descent is a mirror descent with remainder
    $\tfrac12\operatorname{artanh}(2\beta) - \beta$ and gain $\tfrac12\log(1 - 4\beta^2)$.

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

    def init(self, x0=None, scale=1.0, *, key=None):
        r"""Parameters `(u0, v0)` with $u_0^2 - v_0^2 = x_0$, $u_0 v_0 = \text{scale}^2$.

        **Arguments:**

        - `x0`: the initial model point, shape `(n,)`.
        - `scale`: $> 0$, scalar or shape `(n,)` (default 1); `scale**2` must be a normal
          float (about 1.5e-154 to 1.3e154 in float64).
        - `key`: unused (the initialisation is deterministic).
        """
        del key
        x0 = check_point("x0", x0)
        scale = jnp.broadcast_to(check_scale("scale", scale, power=2), x0.shape)
        p0 = scale**2
        root = jnp.hypot(x0, 2.0 * p0)
        # u0^2 is the positive root of t^2 - x0 t - p0^2. For x0 < 0 the direct form
        # cancels; there u0^2 = 2 p0^2 / (root - x0), written as scale^2 * ratio so that
        # p0^2 never underflows.
        ratio = 2.0 * p0 / jnp.where(x0 >= 0, 1.0, root - x0)
        u0 = jnp.where(x0 >= 0, jnp.sqrt(0.5 * (x0 + root)), scale * jnp.sqrt(ratio))
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

    def remainder_and_gain(self, beta):
        return 0.5 * jnp.arctanh(2 * beta) - beta, 0.5 * jnp.log1p(-4 * beta**2)

    def penalty(self, x):
        return 0.5 * jnp.sum(jnp.abs(x))

    def penalty_prox(self, z, step):
        return jnp.sign(z) * jnp.maximum(jnp.abs(z) - 0.5 * step, 0.0)
