"""Formulations of the regularized gradient flow, and the one registry of their names."""

from .._pairs import AbstractClosedFormPair, AbstractSeparablePair
from .._tolerances import AMPLIFICATION, roundoff_rtol
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

# The fastest formulation that can run, as measured by benchmarks/sweep.py (numbers in
# benchmarks/RESULTS.md). Where `rtol` sits near the roundoff of a lower precision
# (below its default, `roundoff_rtol`), the exponential inverse mirror map amplifies
# that roundoff by about k|theta| and the Legendre formulations' error estimates chase
# it: at (40, 100), K = 1024, float32, rtol 1e-6, the row-space formulation took 955
# mean / 3,703 max steps (18.2 s) against the parameter flow's 1,111 (7.7 s). At
# float32's default rtol (1.2e-5) the row-space formulation is again the fastest.
_PREFERENCE = (RowSpaceFormulation, DualFormulation, ParameterFormulation)
_NEAR_ROUNDOFF = (ParameterFormulation,)


_IMPRECISE_DUAL = (MirrorFormulation, ParameterFormulation)


def auto_formulation(
    problem, pair, dtype, rtol=None, precision=None
) -> AbstractFormulation:
    """The preferred formulation for this problem, pair, floating dtype and `rtol`
    (`None`: the default for `dtype`). `precision`, where known, is `(w0, a)`: the
    initialisation and the most negative Legendre time the flow reaches; where the
    pair's `dual_amplification` there exceeds `AMPLIFICATION`, the dual coordinate
    loses x's accuracy (measured: the deep pair with plain weight decay at a = -10
    drifted by 0.5), and the mirror or parameter formulation runs instead."""
    near_roundoff = rtol is not None and rtol < roundoff_rtol(dtype)
    order = _NEAR_ROUNDOFF if near_roundoff else _PREFERENCE
    if isinstance(pair, AbstractSeparablePair):
        # Its Legendre function is an ODE solve per evaluation: a user's copy of
        # Hadamard ((d, n) = (3, 8), t1 = 20) took 5 ms in the parameter formulation,
        # 384 ms (row space), 388 ms (dual), 2,744 ms (mirror) (benchmarks/RESULTS.md,
        # benchmarks/user_pair.py).
        order = (ParameterFormulation,)
    if precision is not None and isinstance(pair, AbstractClosedFormPair):
        if pair.dual_amplification(*precision) > AMPLIFICATION:
            order = _IMPRECISE_DUAL
    for cls in order:
        formulation = cls()
        if formulation.unsupported(problem, pair) is None:
            return formulation
    return ParameterFormulation()


def as_formulation(
    formulation, problem, pair, dtype, rtol=None, precision=None
) -> AbstractFormulation:
    """Map a name (or `"auto"`) to its object, once; check that it can run here.

    **Arguments:**

    - `formulation`: an `AbstractFormulation`, one of the names in `FORMULATIONS`, or
      `"auto"` (the measured fastest that can run, see `auto_formulation`).
    - `problem`, `pair`: what it will integrate.
    - `dtype`: the floating dtype of the initial parameters (for `"auto"`).
    - `rtol`: the relative tolerance the flow will run at (for `"auto"`; `None`: the
      default for `dtype`).
    - `precision`: `(w0, a)` where known (for `"auto"`, see `auto_formulation`).
    """
    if isinstance(formulation, AbstractFormulation):
        chosen = formulation
    elif isinstance(formulation, str) and formulation == "auto":
        chosen = auto_formulation(problem, pair, dtype, rtol, precision)
    elif isinstance(formulation, str) and formulation in FORMULATIONS:
        chosen = FORMULATIONS[formulation]()
    else:
        raise ValueError(
            f"`formulation` must be one of {tuple(FORMULATIONS)}, 'auto' or an "
            f"`AbstractFormulation`, got {formulation!r}."
        )
    chosen.check(problem, pair)
    return chosen
