r"""Bring your own pair: a separable (g, h) whose Legendre function is computed.

A user writes `g`, `h` and `init`, with g acting elementwise on a tuple of arrays of
shape `(n,)` (coordinate i's parameters are the i-th entries of every leaf) and h
summing over coordinates. Where the gradient fields close, $[\nabla g_i, \nabla h]
= c\,\nabla g_i$ with one constant c, the time-varying Legendre function follows from
the flows of the two fields (`jaxmirror._flow_legendre`), and the mirror, dual and
row-space formulations, `jm.implicit_bias`, `jm.positional_bias_centre` and
`jm.type_of_bias` work for the pair with no more code.
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checking import float_dtype, is_concrete
from .._flow_legendre import descend, FlowLegendre, SeparableFields
from ._base import AbstractClockOnlyPair, AbstractClosedFormPair


class BracketReport(eqx.Module):
    r"""How well a separable pair's fields close, at the points checked.

    **Fields:**

    - `coefficient`: $c_i$ in $[\nabla g_i, \nabla h] \approx c_i\nabla g_i$, per
      coordinate and point checked (flattened).
    - `residual`: $|[\nabla g_i, \nabla h] - c_i\nabla g_i|$ relative to the size of
      the bracket's two terms, at the same places.
    - `overlap`: $|\langle\nabla g_i, \nabla h\rangle| / (|\nabla g_i||\nabla h|)$,
      zero where weight decay changes only the clock.
    """

    coefficient: np.ndarray
    residual: np.ndarray
    overlap: np.ndarray

    @property
    def kappa(self) -> float:
        r"""The clock's rate $\kappa = -c$ (median over the points checked)."""
        return -float(np.median(self.coefficient))

    @property
    def spread(self) -> float:
        """The largest deviation of a coefficient from the median, relative to 1 + |c|."""
        c = self.coefficient
        return float(np.max(np.abs(c - np.median(c))) / (1.0 + abs(np.median(c))))


class AbstractSeparablePair(AbstractClosedFormPair):
    r"""A separable pair of your own: write `g`, `h` and `init`, get the rest.

    - `g(w)`: elementwise in the coordinates: `w` is a tuple (any pytree) of arrays of
      shape `(n,)`, and `g(w)[i]` depends only on the i-th entries of the leaves.
    - `h(w)`: a sum over coordinates of one function of coordinate i's entries
      (weight decay: `0.5 * sum of squares`).
    - `init(x0, scale)`: parameters with `g(w0) = x0`.

    The pair then has a numerical time-varying Legendre function (`legendre(w0)`,
    a `FlowLegendre`), provided the Lie brackets of $X = \nabla g_i$ and
    $Y = \nabla h$ close: $[X, Y] = cX$ with one constant c. The clock of the mirror
    flow is $e^{\kappa a}$ with $\kappa = -c$ ($\kappa = 0$: the fields commute, as
    for `Hadamard`). The check runs where `w0` is concrete, at `w0` and at
    $\Phi^Y_{-1/2}(w_0)$ (after weight decay has acted for a while), before any
    solve; a pair whose brackets do not close is refused with the figures.

    A pair on which weight decay changes only the clock ($\langle X, Y\rangle = 0$,
    such as $\log u - \log v$) may also derive from `jm.AbstractClockOnlyPair`; the
    check then verifies that too.

    **Class attributes** (override to change): `flow_rtol` (1e-12, raised to 100
    eps in lower precision), `flow_atol` (1e-16), `flow_max_steps` (4096) for the
    orbits; `bracket_tol` (1e-8) for the check.
    """

    flow_rtol: ClassVar[float] = 1e-12
    flow_atol: ClassVar[float] = 1e-16
    flow_max_steps: ClassVar[int] = 4096
    bracket_tol: ClassVar[float] = 1e-8

    def fields(self, w0) -> tuple[SeparableFields, jax.Array]:
        """The per-coordinate fields and `w0` stacked as `(n, p)`."""
        leaves, treedef = jax.tree_util.tree_flatten(w0)
        shapes = {jnp.shape(leaf) for leaf in leaves}
        if len(shapes) != 1 or len(next(iter(shapes))) != 1:
            raise ValueError(
                "`w0`: a separable pair's parameters are arrays of one shape (n,), "
                f"one per factor; got shapes {[jnp.shape(leaf) for leaf in leaves]}."
            )
        stacked = jnp.stack([jnp.asarray(leaf) for leaf in leaves], axis=-1)
        return SeparableFields(self, treedef), stacked

    def _tolerances(self, dtype):
        rtol = max(self.flow_rtol, 100 * float(jnp.finfo(dtype).eps))
        return rtol, self.flow_atol, self.flow_max_steps

    def brackets(self, w0) -> BracketReport:
        r"""The bracket figures at `w0` and at $\Phi^Y_{-1/2}(w_0)$ (concrete `w0`)."""
        fields, z = self.fields(w0)
        figures = _bracket_figures(fields, z, self._tolerances(z.dtype))
        return BracketReport(*(np.asarray(v) for v in figures))

    def closure_problem(self, w0) -> str | None:
        """Why this pair has no Legendre function from `w0`, or None (concrete `w0`)."""
        return self._closure(w0)[1]

    def _closure(self, w0) -> tuple[BracketReport, str | None]:
        fields, z = self.fields(w0)
        _check_separable(fields, z)
        report = self.brackets(w0)
        name = type(self).__name__
        if not np.all(np.isfinite(report.coefficient)):
            return report, (
                f"`w0`: {name}'s field grad g_i vanishes (or is not finite) at w0 or "
                "along its weight-decay flow: a degenerate initialisation, where the "
                "mirror map is not defined. Use the pair's `init` with a nonzero scale."
            )
        worst = float(np.max(report.residual))
        if worst > self.bracket_tol or report.spread > self.bracket_tol:
            return report, (
                f"`pair`: {name}'s Lie brackets do not close: [grad g_i, grad h] = "
                f"c grad g_i + r with |r| up to {worst:.3g} of the bracket's terms and c "
                f"from {np.min(report.coefficient):.6g} to "
                f"{np.max(report.coefficient):.6g} (the mirror map needs r = 0 and one "
                f"constant c, to {self.bracket_tol:g}; jm.lie_brackets reports both). "
                "Simulate it with formulation='parameter'."
            )
        overlap = float(np.max(report.overlap))
        if isinstance(self, AbstractClockOnlyPair) and overlap > self.bracket_tol:
            return report, (
                f"`pair`: {name} derives from AbstractClockOnlyPair, but "
                f"<grad g_i, grad h> is not 0 (up to {overlap:.3g} of "
                "|grad g_i||grad h|): weight decay moves its Legendre function."
            )
        return report, None

    def legendre(self, w0) -> FlowLegendre:
        r"""The numerical time-varying Legendre function of the initialisation `w0`
        (normalised by $\nabla R_0(g(w_0)) = 0$). Refuses, naming the brackets, a pair
        whose fields do not close (checked where `w0` is concrete)."""
        fields, z = self.fields(w0)
        z = z.astype(jnp.result_type(z.dtype, float_dtype()))
        if is_concrete(w0):
            with jax.ensure_compile_time_eval():  # concrete inside a jit trace too
                report, problem = self._closure(w0)
            if problem is not None:
                raise ValueError(problem)
            kappa = jnp.asarray(report.kappa, z.dtype)
        else:
            kappa = _kappa(fields, z)
        rtol, atol, max_steps = self._tolerances(z.dtype)
        return FlowLegendre(fields, z, kappa, rtol, atol, max_steps)


@eqx.filter_jit
def _kappa(fields, z):
    r"""$\kappa = -c$, the mean over the coordinates of `z` (not differentiated)."""
    return jax.lax.stop_gradient(-jnp.mean(fields.bracket_coefficient(z)[0]))


@eqx.filter_jit
def _bracket_figures(fields, z, tolerances):
    half = jnp.full(z.shape[:1], -0.5, z.dtype)
    later = descend(fields, z, half, tolerances)["z"]
    points = jnp.concatenate([z, later])
    c, residual, _ = fields.bracket_coefficient(points)
    X, Y = fields.X(points), fields.Y(points)
    overlap = jnp.abs(jnp.sum(X * Y, axis=-1)) / jnp.maximum(
        jnp.linalg.norm(X, axis=-1) * jnp.linalg.norm(Y, axis=-1),
        jnp.finfo(z.dtype).tiny,
    )
    return c, residual, overlap


@eqx.filter_jit
def _coupling(fields, head):
    """The largest entry of g's Jacobian that couples two of the coordinates `head`."""
    jacobian = jax.jacfwd(fields.g)(head)  # (m, m, p)
    off_diagonal = 1.0 - jnp.eye(head.shape[0], dtype=head.dtype)
    return jnp.max(jnp.abs(jacobian * off_diagonal[:, :, None]))


def _check_separable(fields: SeparableFields, z) -> None:
    """Refuse a g that mixes coordinates (checked on the first three)."""
    if float(_coupling(fields, z[:3])) != 0.0:
        raise ValueError(
            "`pair`: g must act elementwise (g(w)[i] may depend only on the i-th "
            "entries of the parameters), but its Jacobian at w0 couples coordinates."
        )
