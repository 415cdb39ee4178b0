"""Formulations of the regularized gradient flow, and the one registry of their names."""

import jax.numpy as jnp

from ._base import AbstractFormulation as AbstractFormulation
from ._dual import DualFormulation as DualFormulation
from ._mirror import MirrorFormulation as MirrorFormulation
from ._parameter import ParameterFormulation as ParameterFormulation
from ._rowspace import RowSpaceFormulation as RowSpaceFormulation


FORMULATIONS = {
    cls.name: cls
    for cls in (
        ParameterFormulation,
        MirrorFormulation,
        DualFormulation,
        RowSpaceFormulation,
    )
}

# The fastest formulation that can run, by precision, as measured by
# benchmarks/sweep.py (numbers in benchmarks/RESULTS.md). In float32 the exponential
# inverse mirror map amplifies roundoff by about k|theta|, so that error estimates near
# rtol make the row-space formulation take 2x (mean) to 7.5x (max) the steps of float64
# (955 against 441 mean, 3,703 against 491 max at (40, 100), K = 1024, rtol 1e-6):
# there the parameter flow wins (7.7 s against 18.2 s for the same sweep).
_PREFERENCE = {
    64: (RowSpaceFormulation, DualFormulation, ParameterFormulation),
    32: (ParameterFormulation,),
}


def prefers_shared_step(formulation: AbstractFormulation) -> bool:
    """Whether, on a CPU, one shared-step batch beats independent solves (measured by
    `benchmarks/sweep.py`): only for the parameter formulation, whose elementwise field
    is cheap enough that its batch wins. The Legendre formulations take fewer steps
    each under `vmap` than one shared step sequence, which every configuration's
    switch-off time cuts (numbers in benchmarks/RESULTS.md)."""
    return isinstance(formulation, ParameterFormulation)


def auto_formulation(problem, pair, dtype) -> AbstractFormulation:
    """The preferred formulation for this problem, pair and floating dtype."""
    bits = 64 if jnp.finfo(dtype).bits >= 64 else 32
    for cls in _PREFERENCE[bits]:
        formulation = cls()
        if formulation.unsupported(problem, pair) is None:
            return formulation
    return ParameterFormulation()


def as_formulation(formulation, problem, pair, dtype) -> AbstractFormulation:
    """Map a name (or `"auto"`) to its object, once; check that it can run here.

    **Arguments:**

    - `formulation`: an `AbstractFormulation`, one of the names in `FORMULATIONS`, or
      `"auto"` (the measured fastest that can run, see `auto_formulation`).
    - `problem`, `pair`: what it will integrate.
    - `dtype`: the floating dtype of the initial parameters (for `"auto"`).
    """
    if isinstance(formulation, AbstractFormulation):
        chosen = formulation
    elif isinstance(formulation, str) and formulation == "auto":
        chosen = auto_formulation(problem, pair, dtype)
    elif isinstance(formulation, str) and formulation in FORMULATIONS:
        chosen = FORMULATIONS[formulation]()
    else:
        raise ValueError(
            f"`formulation` must be one of {tuple(FORMULATIONS)}, 'auto' or an "
            f"`AbstractFormulation`, got {formulation!r}."
        )
    chosen.check(problem, pair)
    return chosen
