"""Formulations of the regularized gradient flow, and the one registry of their names."""

from .._pairs import AbstractMatrixPair
from .._tolerances import roundoff_rtol
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


def prefers_shared_step(
    formulation: AbstractFormulation, threads: int = 1, pair=None
) -> bool:
    """Whether, on a CPU whose sweep solves run in `threads` host threads, one
    shared-step batch beats independent solves (measured; numbers in
    benchmarks/RESULTS.md): only for the parameter formulation, and there

    - in one thread, whose elementwise field is cheap enough that its batch keeps up
      (13.1-14.0 s against 13.2-13.6 s at (40, 100), K = 1,024, float64); in two
      threads the independent solves take 8.2 s against 12.5 s;
    - for a matrix pair (`AbstractMatrixPair`) in any number of threads: its vmapped
      independent solves are slower than one shared step sequence even in two
      threads (2 cores: 20 x 20 Gaussian sensing, K = 4, 12.2 s against 8.4 s;
      50 x 50 commuting sensing, one instance per configuration, K = 4, 93 s
      against 63 s, where solving them one by one took 88 s).

    The Legendre formulations take fewer steps each under `vmap` than one shared
    step sequence, which every configuration's switch-off time cuts."""
    if not isinstance(formulation, ParameterFormulation):
        return False
    return threads == 1 or isinstance(pair, AbstractMatrixPair)


def auto_formulation(problem, pair, dtype, rtol=None) -> AbstractFormulation:
    """The preferred formulation for this problem, pair, floating dtype and `rtol`
    (`None`: the default for `dtype`)."""
    near_roundoff = rtol is not None and rtol < roundoff_rtol(dtype)
    for cls in _NEAR_ROUNDOFF if near_roundoff else _PREFERENCE:
        formulation = cls()
        if formulation.unsupported(problem, pair) is None:
            return formulation
    return ParameterFormulation()


def as_formulation(formulation, problem, pair, dtype, rtol=None) -> AbstractFormulation:
    """Map a name (or `"auto"`) to its object, once; check that it can run here.

    **Arguments:**

    - `formulation`: an `AbstractFormulation`, one of the names in `FORMULATIONS`, or
      `"auto"` (the measured fastest that can run, see `auto_formulation`).
    - `problem`, `pair`: what it will integrate.
    - `dtype`: the floating dtype of the initial parameters (for `"auto"`).
    - `rtol`: the relative tolerance the flow will run at (for `"auto"`; `None`: the
      default for `dtype`).
    """
    if isinstance(formulation, AbstractFormulation):
        chosen = formulation
    elif isinstance(formulation, str) and formulation == "auto":
        chosen = auto_formulation(problem, pair, dtype, rtol)
    elif isinstance(formulation, str) and formulation in FORMULATIONS:
        chosen = FORMULATIONS[formulation]()
    else:
        raise ValueError(
            f"`formulation` must be one of {tuple(FORMULATIONS)}, 'auto' or an "
            f"`AbstractFormulation`, got {formulation!r}."
        )
    chosen.check(problem, pair)
    return chosen
