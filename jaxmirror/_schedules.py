r"""Regularization schedules $\alpha_t \ge 0$ as pytrees.

Every schedule gives $\alpha(t)$, the exact integral $A(t) = \int_0^t \alpha_s\,ds$,
the time variable of the Legendre function $a_t = -A(t)$ (so $a_t \le 0$, non-increasing),
its limits $a_\infty$ and $\alpha_\infty$, and the times where $\alpha$ (or its slope)
jumps, which are handed to the ODE solver's step-size controller.

All numeric parameters are array leaves, never static: a batch of schedules is the same
class with a leading axis on its parameters, e.g.
`SwitchOff(alpha=jnp.linspace(0, 0.1, 8), t_off=20.0 * jnp.ones(8))`, and `jax.vmap`
maps over it.
"""

import abc
import dataclasses
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._checking import (
    as_float_array,
    check,
    check_nonnegative,
    check_positive,
)
from ._custom_types import RealScalarLike


class AbstractSchedule(eqx.Module):
    r"""A weight-decay schedule $t \mapsto \alpha_t \ge 0$, defined for $t \ge 0$.

    Subclasses implement `__call__` ($\alpha_t$), `integral` ($\int_0^t \alpha_s ds$),
    `jump_ts`, `alpha_inf` and `a_inf`. A batch of schedules is one schedule whose
    parameters share leading configuration axes (scalars broadcast); parameters whose
    batch shapes disagree, or an empty batch, are refused at construction.
    """

    def __check_init__(self):
        try:
            batch = jax.eval_shape(self, 0.0).shape
        except (TypeError, ValueError) as error:
            shapes = {
                f.name: jnp.shape(getattr(self, f.name))
                for f in dataclasses.fields(self)
                if eqx.is_array(getattr(self, f.name))
            }
            raise ValueError(
                f"`{type(self).__name__}`: the parameters' batch shapes disagree "
                f"({shapes}); each must be a scalar or share the configuration axes."
            ) from error
        if 0 in batch:
            raise ValueError(
                f"`{type(self).__name__}`: an empty batch of schedules (batch shape "
                f"{batch}); give at least one configuration."
            )

    always_switches_off: ClassVar[bool] = False
    r"""Whether $a_\infty$ is finite for every valid (finite) value of the parameters:
    then the limit after a switch-off is predicted for traced parameters too (under
    `jax.grad`), where the values cannot be inspected."""

    @abc.abstractmethod
    def __call__(self, t: RealScalarLike) -> Float[Array, "..."]:
        r"""The weight-decay strength $\alpha_t$."""

    @abc.abstractmethod
    def integral(self, t: RealScalarLike) -> Float[Array, "..."]:
        r"""The exact integral $A(t) = \int_0^t \alpha_s\,ds$."""

    @abc.abstractmethod
    def jump_ts(self) -> Float[Array, "... jumps"] | None:
        """Times where alpha or its derivative is discontinuous (None if there are none)."""

    @abc.abstractmethod
    def alpha_inf(self) -> Float[Array, "..."]:
        r"""The limit $\alpha_\infty = \lim_{t\to\infty} \alpha_t$."""

    @abc.abstractmethod
    def a_inf(self) -> Float[Array, "..."]:
        r"""The limit $a_\infty = -\int_0^\infty \alpha_s\,ds$ ($-\infty$ if it diverges)."""

    def a(self, t: RealScalarLike) -> Float[Array, "..."]:
        r"""The Legendre time variable $a_t = -\int_0^t \alpha_s\,ds$."""
        return -self.integral(t)

    def as_optax(self, lr: RealScalarLike) -> Callable[[Array], Array]:
        r"""This schedule as an Optax schedule `count -> alpha(count * lr)`.

        Step $k$ of gradient descent with learning rate $\eta$ is time $t = k\eta$, so
        `optax.add_decayed_weights(schedule.as_optax(lr))` puts jaxmirror's weight decay
        (a switch-off included) into any Optax chain. Needs optax >= 0.2.7.
        """
        return as_optax(self, lr)


def _t(t: RealScalarLike) -> Array:
    return as_float_array(t)


def _check_increasing(name, times):
    return check(
        name, times, lambda b: jnp.all(jnp.diff(b, axis=-1) > 0), "strictly increasing"
    )


def _piecewise_edges(boundaries):
    zero = jnp.zeros_like(boundaries[..., :1])
    lo = jnp.concatenate([zero, boundaries], axis=-1)
    hi = jnp.concatenate([boundaries, jnp.full_like(zero, jnp.inf)], axis=-1)
    return lo, hi


def _time_per_piece(t, edges):
    """t with a trailing axis, broadcast to the batch of the schedule's pieces."""
    batch = jnp.broadcast_shapes(t.shape, edges.shape[:-1])
    return jnp.broadcast_to(t, batch)[..., None]


def _piecewise_value(boundaries, values, t):
    lo, hi = _piecewise_edges(boundaries)
    t = _time_per_piece(t, lo)
    inside = (lo <= t) & (t < hi)
    return jnp.sum(jnp.where(inside, values, 0.0), axis=-1)


def _piecewise_integral(boundaries, values, t):
    lo, hi = _piecewise_edges(boundaries)
    t = _time_per_piece(t, lo)
    return jnp.sum(values * jnp.clip(t - lo, 0.0, hi - lo), axis=-1)


class Constant(AbstractSchedule):
    r"""Constant weight decay $\alpha_t = \alpha$.

    **Arguments:**

    - `alpha`: the strength, $\ge 0$ (array; a leading axis makes a batch).

    $a_t = -\alpha t$; $a_\infty = -\infty$ unless $\alpha = 0$.
    """

    alpha: Float[Array, "..."]

    def __init__(self, alpha: RealScalarLike):
        self.alpha = check_nonnegative("alpha", as_float_array(alpha, "alpha"))

    def __call__(self, t):
        return self.alpha + jnp.zeros_like(_t(t))

    def integral(self, t):
        return self.alpha * _t(t)

    def jump_ts(self):
        return None

    def alpha_inf(self):
        return self.alpha

    def a_inf(self):
        return jnp.where(self.alpha == 0, 0.0, -jnp.inf)


class SwitchOff(AbstractSchedule):
    r"""Weight decay $\alpha$ until `t_off`, then none: $\alpha_t = \alpha\,[t < t_{off}]$.

    **Arguments:**

    - `alpha`: the strength before the switch-off, $\ge 0$.
    - `t_off`: the switch-off time, $\ge 0$.

    $a_t = -\alpha \min(t, t_{off})$ and $a_\infty = -\alpha\, t_{off}$.
    """

    always_switches_off: ClassVar[bool] = True

    alpha: Float[Array, "..."]
    t_off: Float[Array, "..."]

    def __init__(self, alpha: RealScalarLike, t_off: RealScalarLike):
        self.alpha = check_nonnegative("alpha", as_float_array(alpha, "alpha"))
        self.t_off = check_nonnegative("t_off", as_float_array(t_off, "t_off"))

    def __call__(self, t):
        return jnp.where(_t(t) < self.t_off, self.alpha, 0.0)

    def integral(self, t):
        return self.alpha * jnp.minimum(_t(t), self.t_off)

    def jump_ts(self):
        return self.t_off[..., None]

    def alpha_inf(self):
        return jnp.zeros_like(self.alpha)

    def a_inf(self):
        return -self.alpha * self.t_off


class PiecewiseConstant(AbstractSchedule):
    r"""Piecewise-constant weight decay.

    $\alpha_t = v_i$ for $b_{i-1} \le t < b_i$, with $b_{-1} = 0$ and $b_{K-1} = \infty$.

    **Arguments:**

    - `boundaries`: the $K-1$ increasing switch times $b_i \ge 0$ (last axis).
    - `values`: the $K$ values $v_i \ge 0$ (last axis).
    """

    boundaries: Float[Array, "... jumps"]
    values: Float[Array, "... pieces"]

    def __init__(self, boundaries, values):
        boundaries = as_float_array(boundaries, "boundaries")
        values = as_float_array(values, "values")
        if boundaries.ndim < 1 or values.ndim < 1:
            raise ValueError(
                "`boundaries` and `values` must be arrays with at least one axis, got "
                f"shapes {boundaries.shape} and {values.shape}."
            )
        if values.shape[-1] != boundaries.shape[-1] + 1:
            raise ValueError(
                "`values` must have one more entry than `boundaries` on the last axis, "
                f"got {values.shape[-1]} values for {boundaries.shape[-1]} boundaries."
            )
        boundaries = check_nonnegative("boundaries", boundaries)
        self.boundaries = _check_increasing("boundaries", boundaries)
        self.values = check_nonnegative("values", values)

    def __call__(self, t):
        return _piecewise_value(self.boundaries, self.values, _t(t))

    def integral(self, t):
        return _piecewise_integral(self.boundaries, self.values, _t(t))

    def jump_ts(self):
        return self.boundaries

    def alpha_inf(self):
        return self.values[..., -1]

    def a_inf(self):
        finite = -self.integral(self.boundaries[..., -1])
        return jnp.where(self.values[..., -1] == 0, finite, -jnp.inf)


class LinearDecay(AbstractSchedule):
    r"""Weight decay that falls linearly from `alpha` to `alpha_end` at `t_end`.

    $\alpha_t = \alpha + (\alpha_{end} - \alpha)\min(t/t_{end}, 1)$.

    **Arguments:**

    - `alpha`: the initial strength, $\ge 0$.
    - `t_end`: when the decay ends, $> 0$.
    - `alpha_end`: the strength after `t_end`, $\ge 0$ (default 0: the decay switches off).
    """

    alpha: Float[Array, "..."]
    t_end: Float[Array, "..."]
    alpha_end: Float[Array, "..."]

    def __init__(self, alpha, t_end, alpha_end=0.0):
        self.alpha = check_nonnegative("alpha", as_float_array(alpha, "alpha"))
        self.t_end = check_positive("t_end", as_float_array(t_end, "t_end"))
        self.alpha_end = check_nonnegative(
            "alpha_end", as_float_array(alpha_end, "alpha_end")
        )

    def __call__(self, t):
        frac = jnp.minimum(_t(t) / self.t_end, 1.0)
        return self.alpha + (self.alpha_end - self.alpha) * frac

    def integral(self, t):
        t = _t(t)
        tau = jnp.minimum(t, self.t_end)
        ramp = self.alpha * tau + (self.alpha_end - self.alpha) * tau**2 / (
            2 * self.t_end
        )
        return ramp + self.alpha_end * jnp.maximum(t - self.t_end, 0.0)

    def jump_ts(self):
        return self.t_end[..., None]

    def alpha_inf(self):
        return self.alpha_end

    def a_inf(self):
        finite = -0.5 * (self.alpha + self.alpha_end) * self.t_end
        return jnp.where(self.alpha_end == 0, finite, -jnp.inf)


class Cosine(AbstractSchedule):
    r"""Cosine decay from `alpha` to `alpha_end` over $[0, t_{end}]$, constant after.

    $\alpha_t = \alpha_{end} + \tfrac12(\alpha - \alpha_{end})(1 + \cos(\pi \min(t, t_{end})/t_{end}))$.

    **Arguments:**

    - `alpha`: the initial strength, $\ge 0$.
    - `t_end`: the length of the decay, $> 0$.
    - `alpha_end`: the final strength, $\ge 0$ (default 0).
    """

    alpha: Float[Array, "..."]
    t_end: Float[Array, "..."]
    alpha_end: Float[Array, "..."]

    def __init__(self, alpha, t_end, alpha_end=0.0):
        self.alpha = check_nonnegative("alpha", as_float_array(alpha, "alpha"))
        self.t_end = check_positive("t_end", as_float_array(t_end, "t_end"))
        self.alpha_end = check_nonnegative(
            "alpha_end", as_float_array(alpha_end, "alpha_end")
        )

    def __call__(self, t):
        tau = jnp.minimum(_t(t), self.t_end)
        cos = jnp.cos(jnp.pi * tau / self.t_end)
        return self.alpha_end + 0.5 * (self.alpha - self.alpha_end) * (1.0 + cos)

    def integral(self, t):
        t = _t(t)
        tau = jnp.minimum(t, self.t_end)
        sin = jnp.sin(jnp.pi * tau / self.t_end)
        bump = 0.5 * (self.alpha - self.alpha_end) * (tau + self.t_end / jnp.pi * sin)
        return self.alpha_end * t + bump

    def jump_ts(self):
        return self.t_end[..., None]

    def alpha_inf(self):
        return self.alpha_end

    def a_inf(self):
        finite = -0.5 * self.alpha * self.t_end
        return jnp.where(self.alpha_end == 0, finite, -jnp.inf)


class ExponentialDecay(AbstractSchedule):
    r"""Exponentially decaying weight decay $\alpha_t = \alpha e^{-r t}$.

    **Arguments:**

    - `alpha`: the initial strength, $\ge 0$.
    - `rate`: the decay rate $r \ge 0$.

    $\int_0^t \alpha_s ds = \alpha (1 - e^{-rt})/r$, so $a_\infty = -\alpha / r$ is finite
    for $r > 0$: the schedule never reaches zero, yet its effect on the Legendre function
    is bounded.
    """

    alpha: Float[Array, "..."]
    rate: Float[Array, "..."]

    def __init__(self, alpha, rate):
        self.alpha = check_nonnegative("alpha", as_float_array(alpha, "alpha"))
        self.rate = check_nonnegative("rate", as_float_array(rate, "rate"))

    def __call__(self, t):
        return self.alpha * jnp.exp(-self.rate * _t(t))

    def integral(self, t):
        t = _t(t)
        # (1 - e^{-rt}) / r, continued to t at r = 0 without dividing by zero.
        safe_rate = jnp.where(self.rate == 0, 1.0, self.rate)
        frac = jnp.where(self.rate == 0, t, -jnp.expm1(-safe_rate * t) / safe_rate)
        return self.alpha * frac

    def jump_ts(self):
        return None

    def alpha_inf(self):
        return jnp.where(self.rate > 0, 0.0, self.alpha)

    def a_inf(self):
        safe_rate = jnp.where(self.rate == 0, 1.0, self.rate)
        decaying = -self.alpha / safe_rate
        constant = jnp.where(self.alpha == 0, 0.0, -jnp.inf)
        return jnp.where(self.rate > 0, decaying, constant)


class PiecewiseSwitchOff(AbstractSchedule):
    r"""A learnable switch-off schedule: $K$ non-negative pieces, then no weight decay.

    $\alpha_t = \operatorname{softplus}(r_i)$ for $b_{i-1} \le t < b_i$ ($b_{-1} = 0$) and
    $\alpha_t = 0$ for $t \ge b_{K-1}$. Any real `raw` gives $\alpha \ge 0$, so gradient
    steps on `raw` can never make the schedule invalid; $a_\infty$ is always finite, so
    `implicit_bias` stays in its (differentiable) switch-off regime.

    **Arguments:**

    - `boundaries`: the $K$ increasing switch times $b_i > 0$ (the last one switches off).
    - `raw`: the $K$ unconstrained parameters $r_i$.
    - `learn_boundaries`: if False (default), gradients do not flow into `boundaries`.
    """

    always_switches_off: ClassVar[bool] = True

    boundaries: Float[Array, "... pieces"]
    raw: Float[Array, "... pieces"]
    learn_boundaries: bool = eqx.field(static=True)

    def __init__(self, boundaries, raw, learn_boundaries: bool = False):
        boundaries = as_float_array(boundaries, "boundaries")
        raw = as_float_array(raw, "raw")
        if boundaries.ndim < 1 or raw.shape != boundaries.shape:
            raise ValueError(
                "`raw` must have the shape of `boundaries` (one value per piece), got "
                f"{raw.shape} and {boundaries.shape}."
            )
        boundaries = check_positive("boundaries", boundaries)
        self.boundaries = _check_increasing("boundaries", boundaries)
        self.raw = check("raw", raw, jnp.isfinite, "finite")
        self.learn_boundaries = learn_boundaries

    @classmethod
    def from_values(cls, boundaries, values, learn_boundaries: bool = False):
        """Build from the values alpha_i > 0 themselves (inverse softplus)."""
        values = check_positive("values", as_float_array(values, "values"))
        raw = values + jnp.log(-jnp.expm1(-values))
        return cls(boundaries, raw, learn_boundaries)

    def values(self) -> Float[Array, "... pieces_plus_one"]:
        """The K values softplus(raw), followed by the final 0."""
        alpha = jax.nn.softplus(self.raw)
        return jnp.concatenate([alpha, jnp.zeros_like(alpha[..., :1])], axis=-1)

    def _boundaries(self):
        if self.learn_boundaries:
            return self.boundaries
        return jax.lax.stop_gradient(self.boundaries)

    def __call__(self, t):
        return _piecewise_value(self._boundaries(), self.values(), _t(t))

    def integral(self, t):
        return _piecewise_integral(self._boundaries(), self.values(), _t(t))

    def jump_ts(self):
        return self._boundaries()

    def alpha_inf(self):
        return jnp.zeros_like(self.raw[..., 0])

    def a_inf(self):
        return -self.integral(self._boundaries()[..., -1])


def as_optax(schedule: AbstractSchedule, lr) -> Callable[[Array], Array]:
    r"""An Optax schedule `count -> alpha(count * lr)`: step $k$ is time $t = k\,\eta$."""
    lr = as_float_array(lr, "lr")

    def weight_decay(count):
        return schedule(jnp.asarray(count).astype(lr.dtype) * lr)

    return weight_decay


SCHEDULES = {
    "constant": Constant,
    "switch_off": SwitchOff,
    "piecewise_constant": PiecewiseConstant,
    "piecewise_switch_off": PiecewiseSwitchOff.from_values,
    "linear_decay": LinearDecay,
    "cosine": Cosine,
    "exponential_decay": ExponentialDecay,
}
"""Every schedule family by the name a configuration file gives it, mapped to the
constructor that takes its parameters (for `PiecewiseSwitchOff`, its values)."""
