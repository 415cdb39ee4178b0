r"""The parameter-space formulation: integrate $w$ itself (any pair)."""

from typing import ClassVar

import equinox as eqx
import jax

from .._gd_step import fit_gradient
from .._pairs import AbstractPair
from .._schedules import AbstractSchedule
from ._base import AbstractFormulation


class _ParameterArgs(eqx.Module):
    pair: AbstractPair
    schedule: AbstractSchedule


class ParameterFormulation(AbstractFormulation):
    r"""Gradient flow on the parameters:
    $$\dot w = -J_g(w)^\top\nabla f(g(w)) - \alpha_t\nabla h(w), \qquad x = g(w).$$

    Works for every pair, including pairs without a closed form (`jm.AbstractPair`
    with `g`, `h` and `init` only). The state has as many entries as the parameters
    (2n for the diagonal pairs). The field's cost is one vector-Jacobian product of g,
    one gradient of h and one gradient of f.
    """

    name: ClassVar[str] = "parameter"
    isolated_limit: ClassVar[bool] = (
        False  # flat directions: the minimisers form a manifold
    )

    def unsupported(self, problem, pair):
        return None

    def init(self, problem, pair, schedule, w0):
        return w0, _ParameterArgs(pair, schedule)

    def field(self, t, w, problem, args):
        grad_fit = fit_gradient(problem, args.pair, w)
        grad_reg = jax.grad(args.pair.h)(w)
        alpha = args.schedule(t)  # cast per leaf: a float32 flow stays float32
        return jax.tree_util.tree_map(
            lambda gf, gh: -(gf + alpha.astype(gh.dtype) * gh), grad_fit, grad_reg
        )

    def point(self, t, w, problem, args):
        return args.pair.g(w)

    def parameters(self, y):
        return y
