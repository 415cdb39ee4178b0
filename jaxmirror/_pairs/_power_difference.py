r"""The depth-L diagonal pair $x = u^L - v^L$ (deep diagonal linear networks)."""

from typing import Literal

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._checking import check, check_point, check_scale
from .._legendre import PowerEntropy
from ._base import AbstractClosedFormPair, AbstractPenalisedPair
from ._diff_squares import DiffSquares


_REGULARIZERS = ("matched", "l2")


class PowerDifference(AbstractClosedFormPair, AbstractPenalisedPair):
    r"""The pair $x = u^L - v^L$ (a depth-L diagonal network), with weight decay on h.

    Parameters are the tuple `(u, v)`, positive for the closed forms.

    - `regularizer="l2"` (default): $h = \tfrac12(|u|^2 + |v|^2)$, weight decay as for
      every other pair (what `optax.add_decayed_weights` applies). The
      brackets do not vanish but are proportional, $[\nabla g_i, \nabla h] =
      (2-L)\nabla g_i$, and the flow is still a mirror flow in closed form, with a
      clock: $\tilde u = u e^{-a}$ follows the unregularized flow in the time
      $\int e^{(L-2)a_t}dt$, so $x_t = e^{La_t}F(\theta_t)$ and
      $\dot\theta = -e^{(L-2)a_t}\nabla f(x_t)$. Its induced penalty
      $\tfrac12|x|^{2/L}$ is not convex: under constant weight decay the flow ends
      at a local minimum of $f + \alpha\rho$ that depends on its path (nonzero and
      sparse on the true support in the runs measured, `tests/test_deep_pairs.py`),
      so `implicit_bias` predicts only schedules that switch off; simulate the
      others with `jm.solve`.
    - `regularizer="matched"`: $h = \tfrac1L\sum_i |u_i|^L + |v_i|^L$. The Lie brackets
      $[\nabla g_i, \nabla h]$ vanish, and $x_t$ is the mirror flow
      $\frac{d}{dt}\nabla R_{a_t}(x_t) = -\nabla f(x_t)$ of the `PowerEntropy` with
      $u^{2-L} = u_0^{2-L} - (L-2)(L\theta + a)$ and
      $v^{2-L} = v_0^{2-L} + (L-2)(L\theta - a)$. **Induced penalty**
      $\rho(x) = |x|_1 / L$ (put all the mass on one factor), so constant weight decay
      $\alpha$ leads to $\min_x f(x) + \tfrac{\alpha}{L}|x|_1$.

    At $L = 2$ both regularizers are $\tfrac12|w|^2$ and the pair is `DiffSquares`
    (same Legendre function). At $\alpha = 0$ the limit from $u_0 = v_0 = s$ minimises
    Woodworth et al.'s (2020) depth-L potential $Q^L_s$ subject to $Zx = y$. Gradient
    descent on this pair is an exact mirror descent only at $L = 2$ (use
    `DiffSquares` there); for $L > 2$, `jm.train` runs it and `jm.compare_to_flow`
    measures the gap.

    **Initialisation convention** (`init(x0, scale)`): $u_0^L - v_0^L = x_0$ and
    $u_0 v_0 = \text{scale}^2$ with $u_0, v_0 > 0$; at $x_0 = 0$, $u_0 = v_0 = $ scale.

    **Arguments:**

    - `depth`: $L$, an int >= 2.
    - `regularizer`: `"l2"` (default, weight decay) or `"matched"`.
    """

    depth: int = eqx.field(static=True)
    regularizer: Literal["matched", "l2"] = eqx.field(static=True)

    def __init__(self, depth, regularizer="l2"):
        # Checked here, not by annotations, so that a wrong value gets our message.
        if (
            isinstance(depth, bool)
            or not isinstance(depth, int | np.integer)
            or depth < 2
        ):
            raise ValueError(
                "`depth` must be an int >= 2 (the closed forms need an integer depth "
                f"L >= 2), got {depth!r}."
            )
        if regularizer not in _REGULARIZERS:
            raise ValueError(
                f"`regularizer` must be one of {_REGULARIZERS}, got {regularizer!r}."
            )
        self.depth = int(depth)
        self.regularizer = regularizer

    def g(self, w):
        if self.depth == 2:
            return DiffSquares().g(w)  # the same arithmetic, so the same flows
        u, v = w
        return u**self.depth - v**self.depth

    def h(self, w):
        u, v = w
        if self.regularizer == "l2" or self.depth == 2:
            return 0.5 * (jnp.sum(u**2) + jnp.sum(v**2))
        return (
            jnp.sum(jnp.abs(u) ** self.depth) + jnp.sum(jnp.abs(v) ** self.depth)
        ) / (self.depth)

    def init(self, x0=None, scale=1.0, *, key=None):
        r"""Parameters `(u0, v0)` with $u_0^L - v_0^L = x_0$, $u_0 v_0 = \text{scale}^2$.

        **Arguments:**

        - `x0`: the initial model point, shape `(n,)`.
        - `scale`: $> 0$, scalar or shape `(n,)` (default 1); `scale**(2L)` must be a
          normal float.
        - `key`: unused (the initialisation is deterministic).
        """
        del key
        L = self.depth
        x0 = check_point("x0", x0)
        scale = jnp.broadcast_to(check_scale("scale", scale, power=2 * L), x0.shape)
        p = scale ** (2 * L)  # (u0 v0)^L
        root = jnp.sqrt(x0**2 + 4.0 * p)
        # u0^L is the positive root of t^2 - x0 t - p; for x0 < 0 the direct form
        # cancels, and there u0^L = 2p / (root - x0).
        t = jnp.where(
            x0 >= 0, 0.5 * (x0 + root), 2.0 * p / jnp.where(x0 >= 0, 1.0, root - x0)
        )
        u0 = t ** (1.0 / L)
        return (u0, scale**2 / u0)

    def dual_amplification(self, w0, a):
        if self.regularizer == "matched" or self.depth == 2:
            return 1.0
        return float(self.legendre(w0).dual_amplification(a))

    def legendre(self, w0):
        u, v = w0
        if self.depth == 2:
            return DiffSquares().legendre(w0)
        expected = (
            "positive in both factors for the closed forms of PowerDifference (u0 > 0 "
            "and v0 > 0). Use `PowerDifference(L).init(x0, scale)`, or "
            "formulation='parameter'"
        )
        u = check("w0", u, lambda t: t > 0, expected)
        v = check("w0", v, lambda t: t > 0, expected)
        exponent = 2.0 - self.depth
        return PowerEntropy(
            p0=u**exponent,
            q0=v**exponent,
            depth=self.depth,
            matched=self.regularizer == "matched",
        )

    def penalised_limit_unavailable(self):
        if self.regularizer == "l2" and self.depth > 2:
            return (
                f"`pair`: PowerDifference({self.depth}, 'l2') has the non-convex induced "
                f"penalty |x|^(2/{self.depth})/2: under constant weight decay the flow "
                "ends at a local minimum of f + alpha * penalty that depends on its "
                "path, which no convex program predicts. Simulate it (jm.solve), use "
                "a schedule that switches off, or regularizer='matched'."
            )
        return None

    def penalty(self, x):
        if self.regularizer == "l2" and self.depth > 2:
            return 0.5 * jnp.sum(jnp.abs(x) ** (2.0 / self.depth))
        return jnp.sum(jnp.abs(x)) / self.depth

    def penalty_prox(self, z, step):
        unavailable = self.penalised_limit_unavailable()
        if unavailable is not None:  # the non-convex penalty has no prox here
            raise ValueError(unavailable)
        threshold = step / self.depth
        return jnp.sign(z) * jnp.maximum(jnp.abs(z) - threshold, 0.0)
