r"""The logarithmic pair $x = \log u - \log v$."""

import jax.numpy as jnp

from .._checking import check, check_point, check_scale
from .._legendre import LogisticEntropy
from ._base import AbstractClockOnlyPair


class LogDifference(AbstractClockOnlyPair):
    r"""The pair $x = \log u - \log v$ ($u, v > 0$), $h = \tfrac12(|u|^2 + |v|^2)$.

    **The flow.** $\dot u = -\nabla f/u - \alpha_t u$ and $\dot v = \nabla f/v - \alpha_t v$,
    so $s = u^2 + v^2$ decays exactly as $s_t = s_0e^{2a_t}$ and
    $u^2 = s_t\,\sigma(2x)$. Two equivalent readings of the same dynamics:

    - **Range shrinking.** The natural mirror coordinate $\vartheta = u^2/2 =
      \tfrac{s_t}{2}\sigma(2x)$ lies in $(0, s_0e^{2a_t}/2)$, an interval that shrinks
      with weight decay, and obeys $d\vartheta = -\nabla f\,dt - 2\alpha_t\vartheta\,dt$:
      not of the form $d\nabla R_{a_t}(x_t) = -\nabla f\,dt$ (no $R_a$ does it: its
      Hessian would have to change with $a$ while $\nabla R_a$ does not).
    - **A clock.** $\theta = e^{-2a_t}\vartheta = \tfrac{s_0}{2}\sigma(2x)$ has a fixed
      range and $\dot\theta = -e^{-2a_t}\nabla f(x_t)$: the fixed `LogisticEntropy`
      with time running faster by $e^{-2a_t}$.

    This reading is this project's derivation ("weight decay changes only the clock;
    the range of $u^2/2$ shrinks as $e^{2a}$"), not a reproduction of the paper's
    range-shrinking example, whose own definition was not available to check.

    So weight decay changes neither the geometry nor, where the flow interpolates, the
    limit (the Bregman projection of $x_0$ in that entropy): it shrinks the range of
    $\vartheta$ and speeds the flow up. `implicit_bias` returns the same limit for every
    schedule. **Induced penalty** $\inf\{h : g(w) = x\} = 0$ (scale both factors
    down), so constant weight decay adds no penalty term either.

    **Initialisation convention** (`init(x0, scale)`): $u_0 = \text{scale}\,e^{x_0/2}$,
    $v_0 = \text{scale}\,e^{-x_0/2}$; at $x_0 = 0$, $u_0 = v_0 = $ scale.
    """

    def g(self, w):
        u, v = w
        return jnp.log(u) - jnp.log(v)

    def h(self, w):
        u, v = w
        return 0.5 * (jnp.sum(u**2) + jnp.sum(v**2))

    def init(self, x0=None, scale=1.0, *, key=None):
        r"""Parameters `(u0, v0) = scale * (e^{x0/2}, e^{-x0/2})`.

        **Arguments:**

        - `x0`: the initial model point, shape `(n,)`.
        - `scale`: $> 0$, scalar or shape `(n,)` (default 1); `scale**2` must be a
          normal float.
        - `key`: unused (the initialisation is deterministic).
        """
        del key
        x0 = check_point("x0", x0)
        scale = check_scale("scale", scale, power=2)
        return (scale * jnp.exp(0.5 * x0), scale * jnp.exp(-0.5 * x0))

    def check_parameters(self, w0):
        u, v = w0
        expected = "positive in both factors for LogDifference (u > 0 and v > 0)"
        return (
            check("w0", u, lambda t: t > 0, expected),
            check("w0", v, lambda t: t > 0, expected),
        )

    def legendre(self, w0):
        u, v = self.check_parameters(w0)
        log_s0 = jnp.logaddexp(2.0 * jnp.log(u), 2.0 * jnp.log(v))
        return LogisticEntropy(log_s0=log_s0)

    def range_width(self, w0, a):
        r"""The width $s_0 e^{2a}/2$ of the range of $\vartheta = u^2/2$ at Legendre
        time `a` (the range shrinking of weight decay)."""
        u, v = w0
        return 0.5 * (u**2 + v**2) * jnp.exp(2.0 * jnp.asarray(a))
