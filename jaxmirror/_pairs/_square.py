r"""The square pair $x = w \odot w$."""

import jax.numpy as jnp

from .._checking import as_float_array, check, check_point, is_concrete
from .._legendre import ShiftedEntropy
from ._base import AbstractMirrorDescentPair, AbstractPenalisedPair


class Square(AbstractMirrorDescentPair, AbstractPenalisedPair):
    r"""The pair $x = w^2$ (so $x \ge 0$), $h(w) = \tfrac12|w|^2$.

    Parameters are the array `w`. $x_t$ is the mirror flow of the `ShiftedEntropy`
    $\nabla R_a(x) = \tfrac14\log x - \tfrac a2$, i.e.
    $\dot x = -4x\,\nabla f(x) - 2\alpha_t x$. Weight decay only shifts the potential:
    it moves the centre $\hat x = x_0 e^{2a}$ but never changes the type of bias.

    **Induced penalty.** $\rho(x) = \tfrac12\sum_i x_i$ on $x \ge 0$, so constant weight
    decay $\alpha$ leads to $\min_{x \ge 0} f(x) + \tfrac\alpha2\sum_i x_i$.

    **Discrete steps.** Gradient descent is a mirror descent with remainder
    $-\tfrac12\log(1 - 2\beta) - \beta$ and no gain.

    **Initialisation convention** (`init(x0)`): $w_0 = \sqrt{x_0}$, $x_0 > 0$. The pair has
    no free scale: its Legendre function is the same for every initialisation, and the
    size of the initialisation is $x_0$ itself.
    """

    def g(self, w):
        return w * w

    def h(self, w):
        return 0.5 * jnp.sum(w**2)

    def init(self, x0=None, scale=None, *, key=None):
        r"""Parameters `w0 = sqrt(x0)` for an initial point `x0 > 0` of shape `(n,)`.

        **Arguments:**

        - `x0`: the initial model point, $> 0$ in every coordinate.
        - `scale`: must be `None`: the square pair has no free scale (a small
          initialisation is a small `x0`).
        - `key`: unused (the initialisation is deterministic).
        """
        del key
        if scale is not None:
            raise ValueError(
                "`scale` must be None for Square: the pair has no free scale once `x0` "
                "is fixed (w0 = sqrt(x0)); choose a small `x0` for a small "
                f"initialisation. Got scale={scale!r}."
            )
        x0 = check_point("x0", x0)
        x0 = check("x0", x0, lambda v: v > 0, "> 0 in every coordinate for Square")
        return jnp.sqrt(x0)

    def legendre(self, w0):
        # Only checked eagerly: traced, a zero coordinate gives theta0 = -inf, which the
        # dual flow carries exactly as x = 0 forever (the correct limit), never NaN.
        if is_concrete(w0):
            check(
                "w0",
                as_float_array(w0, "w0"),
                lambda w: w != 0,
                "non-zero in every coordinate for Square (x = w**2 stays at 0 forever "
                "where w0 = 0). Use `Square().init(x0)` with x0 > 0, or "
                "formulation='parameter'",
            )
        return ShiftedEntropy()

    def remainder_and_gain(self, beta):
        return -0.5 * jnp.log1p(-2 * beta) - beta, jnp.zeros_like(beta)

    def penalty(self, x):
        return jnp.where(jnp.all(x >= 0), 0.5 * jnp.sum(x), jnp.inf)

    def penalty_prox(self, z, step):
        return jnp.maximum(z - 0.5 * step, 0.0)
