"""The arguments shared by the formulations built on a closed-form Legendre function."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checking import is_concrete
from .._legendre import AbstractLegendre
from .._pairs import AbstractClosedFormPair, AbstractSeparablePair
from .._schedules import AbstractSchedule


class LegendreArgs(eqx.Module):
    r"""$R_a$, the schedule (for $a_t$), and $\theta_0 = \nabla R_0(x_0)$."""

    legendre: AbstractLegendre
    schedule: AbstractSchedule
    theta0: Float[Array, " n"]

    def a(self, t):
        r"""$a_t$ in the dtype of the mirror coordinate: a float32 flow stays float32
        even where the schedule or the solver's clock are float64."""
        return self.schedule.a(t).astype(self.theta0.dtype)

    def clock(self, t):
        r"""The Legendre function's time scale $\kappa(a_t)$."""
        return self.legendre.time_scale(self.a(t))


def legendre_args(pair, schedule, w0) -> LegendreArgs:
    r"""The Legendre function of `w0` and $\theta_0 = \nabla R_0(g(w_0))$, computed once."""
    legendre = pair.legendre(w0)
    x0 = pair.g(w0)
    theta0 = legendre.grad(x0, jnp.zeros((), x0.dtype))  # a_0 = 0
    return LegendreArgs(legendre, schedule, theta0)


def closed_form_reason(pair) -> str | None:
    if isinstance(pair, AbstractClosedFormPair):
        return None
    return (
        "needs a pair with a closed-form Legendre function (an "
        f"`AbstractClosedFormPair`); {type(pair).__name__} has none. Use "
        "formulation='parameter'."
    )


def check_legendre(pair, w0) -> None:
    """Refuse now, before any solve, a separable pair whose brackets do not close
    (`AbstractSeparablePair.closure_problem`; for a batch of initialisations, on its
    first). Inside compiled code the check cannot run: the entry points call this
    eagerly."""
    if not isinstance(pair, AbstractSeparablePair) or not is_concrete(w0):
        return
    first = jax.tree_util.tree_map(lambda leaf: leaf.reshape(-1, leaf.shape[-1])[0], w0)
    reason = pair.closure_problem(first)
    if reason is not None:
        raise ValueError(reason)
