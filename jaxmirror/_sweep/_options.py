r"""`SweepOptions`: every option of `jm.sweep`, as one typed record.

`jm.sweep(..., **options)` builds one `SweepOptions` from its keywords, and the plan
(`_plan.py`) returns a resolved copy (every `"auto"` and default replaced by what will
run: objects for the formulation, strategy and backend, numbers for the tolerances,
the chunk's unit for `chunk_size`). The fields marked as determining the results are
the one list from which both the results' attributes and the resume fingerprint are
derived (`_results.py`), so that the two can never list different settings.
"""

import dataclasses

import diffrax as dfx
import numpy as np

from .._arguments import check_count, check_tolerance
from .._solve import check_controller, check_solver
from .._tolerances import MAX_ATOL, MAX_RTOL


def _option(default, *, determines_results: bool = True):
    return dataclasses.field(
        default=default, metadata={"determines_results": determines_results}
    )


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """The options of `jm.sweep` (see its docstring for each)."""

    formulation: object = _option("auto")  # a name, "auto" or an AbstractFormulation
    strategy: object = _option("auto")  # a name, "auto" or an AbstractStrategy
    backend: object = _option("auto")  # a name, "auto" or an AbstractBackend
    solver: dfx.AbstractAdaptiveSolver | None = _option(None)
    rtol: float | None = _option(None)
    atol: float | None = _option(None)
    max_steps: int = _option(100_000)
    stepsize_controller: dfx.AbstractAdaptiveStepSizeController | None = _option(None)
    chunk_size: int | None = _option(None)
    predict: bool = _option(True)
    progress: bool = _option(True, determines_results=False)
    resume: bool = _option(False, determines_results=False)
    repair: bool = _option(False, determines_results=False)

    @classmethod
    def checked(cls, **options) -> "SweepOptions":
        """The options as a user passed them to `jm.sweep`, each checked by name
        (before any work, and before a runtime type checker would see them)."""
        if options["chunk_size"] is not None:
            options["chunk_size"] = check_count("chunk_size", options["chunk_size"])
        options["max_steps"] = check_count("max_steps", options["max_steps"])
        for name, maximum in (("rtol", MAX_RTOL), ("atol", MAX_ATOL)):
            if options[name] is not None:
                options[name] = check_tolerance(name, options[name], maximum)
        if options["solver"] is not None:
            check_solver(options["solver"])
        check_controller(options["stepsize_controller"])
        for name in ("predict", "progress", "resume", "repair"):
            if not isinstance(options[name], bool | np.bool_):
                raise ValueError(
                    f"`{name}` must be True or False, got {options[name]!r}."
                )
            options[name] = bool(options[name])
        if options["repair"] and not options["resume"]:
            raise ValueError(
                "`repair` recomputes a resumed store's damage: it needs resume=True."
            )
        return cls(**options)

    def determining(self) -> dict:
        """The fields that determine the results, by name (in declaration order)."""
        return {
            field.name: getattr(self, field.name)
            for field in dataclasses.fields(self)
            if field.metadata["determines_results"]
        }
