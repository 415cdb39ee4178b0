r"""The Hadamard (diagonal linear network) pair $x = m \odot w$."""

import jax.numpy as jnp

from .._checking import check, check_point, check_scale
from .._legendre import HyperbolicEntropy
from ._base import AbstractMirrorDescentPair, AbstractPenalisedPair


class Hadamard(AbstractMirrorDescentPair, AbstractPenalisedPair):
    r"""The pair $x = m \odot w$, $h(m, w) = \tfrac12(|m|^2 + |w|^2)$.

    Parameters are the tuple `(m, w)`. Under the flow
    $u = m^2 - w^2$ decays exactly as $u_t = u_0 e^{2a_t}$, and $x_t$ is the mirror flow of
    the `HyperbolicEntropy` with $k = 2$ and $c_a = |u_a|/2$:
    $$\nabla R_a(x) = \tfrac12\operatorname{arcsinh}\frac{2x}{|u_a|},\qquad
    \dot x = -\sqrt{u_{a_t}^2 + 4x^2}\,\nabla f(x) - 2\alpha_t x.$$

    **Induced penalty.** $\rho(x) = \min\{h : m w = x\} = |x|_1$, so constant weight
    decay $\alpha$ leads to the lasso $\min_x f(x) + \alpha|x|_1$.

    **Discrete steps.** One step of `add_decayed_weights(lam)` + `sgd(eta)` is a mirror
    descent with remainder $\operatorname{artanh}\beta - \beta$ and gain
    $\tfrac12\log(1 - \beta^2)$ (see `jm.mirror_descent_step`).

    **Initialisation convention** (`init(x0, scale)`): $m_0 w_0 = x_0$ and
    $m_0^2 - w_0^2 = \text{scale}^2$, with $m_0 > 0$. At $x_0 = 0$ this is $m_0 = $ scale,
    $w_0 = 0$ (so $c_0 = \text{scale}^2/2$). Pesme et al. (2021) use $m_0 = \sqrt2 s$,
    $w_0 = 0$, and the paper writes the regularizer as $m^2 + w^2$: see
    `jaxmirror.conventions`.
    """

    def g(self, w):
        m, v = w
        return m * v

    def h(self, w):
        m, v = w
        return 0.5 * (jnp.sum(m**2) + jnp.sum(v**2))

    def init(self, x0=None, scale=1.0, *, key=None):
        r"""Parameters `(m0, w0)` with $m_0 w_0 = x_0$ and $m_0^2 - w_0^2 = \text{scale}^2$.

        **Arguments:**

        - `x0`: the initial model point, shape `(n,)`.
        - `scale`: $> 0$, scalar or shape `(n,)` (default 1); `scale**2` must be a normal
          float (about 1.5e-154 to 1.3e154 in float64).
        - `key`: unused (the initialisation is deterministic).

        Floating point holds $m_0^2 - w_0^2$ only to a relative precision of about
        $\epsilon |x_0| / \text{scale}^2$: for tiny scales keep $|x_0|$ comparable to
        $\text{scale}^2$ (the rich regime starts from $x_0 \approx 0$ anyway).
        """
        del key
        x0 = check_point("x0", x0)
        scale = check_scale("scale", scale, power=2)
        u0 = jnp.broadcast_to(scale**2, x0.shape)
        m0 = jnp.sqrt(0.5 * (jnp.hypot(u0, 2.0 * x0) + u0))
        return (m0, x0 / m0)

    def legendre(self, w0):
        m, v = w0
        u0 = (m - v) * (m + v)
        u0 = check(
            "w0",
            u0,
            lambda u: u != 0,
            "a non-degenerate initialisation for Hadamard (m0**2 != w0**2 in every "
            "coordinate; the Legendre function has no finite scale there). Use "
            "`Hadamard().init(x0, scale)` with scale > 0, or formulation='parameter'",
        )
        return HyperbolicEntropy(log_c0=jnp.log(jnp.abs(u0)) - jnp.log(2.0), k=2.0)

    def remainder_and_gain(self, beta):
        return jnp.arctanh(beta) - beta, 0.5 * jnp.log1p(-(beta**2))

    def penalty(self, x):
        return jnp.sum(jnp.abs(x))

    def penalty_prox(self, z, step):
        return jnp.sign(z) * jnp.maximum(jnp.abs(z) - step, 0.0)
