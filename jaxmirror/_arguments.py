"""Input checks shared by the entry points (`solve`, `implicit_bias`, `train`, `sweep`).

Each raises a `ValueError` (or `TypeError` for a wrong kind of object) that names the
argument and says what was expected, before any long computation starts.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from ._checking import as_float_array, check, is_concrete, short_repr
from ._pairs import AbstractMatrixPair, AbstractPair
from ._problems import as_problem, MatrixSensing
from ._schedules import AbstractSchedule


def check_pair(pair) -> None:
    if not isinstance(pair, AbstractPair):
        raise TypeError(
            f"`pair` must be a jaxmirror pair (e.g. `jm.Hadamard()`), got "
            f"{type(pair).__name__}."
        )


def check_schedule(schedule, name: str = "schedule") -> None:
    if not isinstance(schedule, AbstractSchedule):
        raise TypeError(
            f"`{name}` must be a jaxmirror schedule (e.g. `jm.SwitchOff(alpha, t_off)`), "
            f"got {type(schedule).__name__}."
        )


def check_inputs(problem, pair, schedule, w0):
    """Checks shared by `solve`, `implicit_bias` and `train`: one configuration.

    **Returns:** `(problem, w0)`, the problem as an `AbstractProblem` and `w0` as
    floating arrays.
    """
    problem = as_problem(problem)
    check_pair(pair)
    check_schedule(schedule)
    batch = jax.eval_shape(schedule, 0.0).shape
    if batch != ():
        raise ValueError(
            f"`schedule` must be a single schedule with scalar parameters, got batch "
            f"shape {batch}. Map over a batch with `jax.vmap` or use `jm.sweep`."
        )
    w0 = check_point_of(problem, pair, w0)
    return problem, w0


def check_point_of(problem, pair, w0, batched: bool = False):
    """`w0` as floating arrays, finite, with `g(w0)` of the problem's shape."""
    if isinstance(pair, AbstractMatrixPair) and isinstance(problem, MatrixSensing):
        problem.check_shape(pair.matrix_shape)
    w0 = jax.tree_util.tree_map(lambda leaf: as_float_array(leaf, "w0"), w0)
    check_precision(problem, w0)
    if isinstance(pair, AbstractMatrixPair):
        _check_factors(pair, w0, batched)
    g = jax.vmap(pair.g) if batched else pair.g
    try:
        x_shape = jax.eval_shape(g, w0)
    except Exception as error:  # noqa: BLE001 - re-raised with the argument named
        raise ValueError(
            f"`w0` does not fit the pair {type(pair).__name__}: g(w0) failed with "
            f"{type(error).__name__}: {error}"
        ) from error
    n = problem.dim()
    point_shape = x_shape.shape[1:] if batched else x_shape.shape
    if len(point_shape) != 1 or (n is not None and point_shape != (n,)):
        raise ValueError(
            f"`w0` gives x = g(w0) of shape {x_shape.shape}, but the problem expects "
            f"shape {'(K, ' if batched else '('}{n},)."
        )
    if is_concrete(w0):
        leaves = jax.tree_util.tree_leaves(w0)
        if not all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in leaves):
            raise ValueError("`w0` must be finite (no NaN or inf).")
    return pair.check_parameters(w0)


def check_precision(problem, w0) -> None:
    """`w0` and the problem's arrays in one floating dtype (a float32 `w0` with a
    float64 problem would fail deep inside the solver)."""
    import equinox as eqx

    ours = {str(leaf.dtype) for leaf in jax.tree_util.tree_leaves(w0)}
    theirs = {
        str(leaf.dtype)
        for leaf in jax.tree_util.tree_leaves(problem)
        if eqx.is_inexact_array(leaf)
    }
    if len(ours) > 1:
        raise ValueError(f"`w0` mixes precisions {sorted(ours)}; pass one dtype.")
    if theirs and ours != theirs:
        raise ValueError(
            f"`w0` is {', '.join(sorted(ours))} but `problem` holds "
            f"{', '.join(sorted(theirs))} arrays: pass both in one precision (e.g. "
            "jnp.asarray(w0, jnp.float64), or the problem's arrays as float32)."
        )


def _check_factors(pair, w0, batched: bool) -> None:
    """A matrix pair's factors have its shapes (after one leading axis if `batched`):
    its g flattens a matrix product, which broadcasts over leading axes, so a wrong
    shape can give a point of the right size."""
    shapes = tuple(np.shape(leaf) for leaf in jax.tree_util.tree_leaves(w0))
    lead = shapes[0][:1] if batched and shapes and shapes[0] else ()
    if shapes != tuple(lead + tuple(shape) for shape in pair.factor_shapes):
        raise ValueError(
            f"`w0`: {type(pair).__name__} expects factors of shapes "
            f"{pair.factor_shapes} (each with a leading configuration axis in a "
            f"batched sweep), got {shapes}."
        )


def check_t1(t1):
    """`t1` as a floating array, finite and > 0: checked now when concrete, and through
    `eqx.error_if` when traced (a traced negative `t1` would integrate backwards)."""
    t1 = as_float_array(t1, "t1")
    if t1.ndim != 0:
        raise ValueError(f"`t1` must be a scalar, got shape {t1.shape}.")
    # Concrete: in NumPy (eagerly, each JAX operation would compile a program).
    xnp = np if is_concrete(t1) else jnp
    return check(
        "t1", t1, lambda t: xnp.isfinite(t) & (xnp.asarray(t) > 0), "finite and > 0"
    )


def check_tolerance(name: str, value, maximum: float | None = None) -> float:
    """A Python float, finite and > 0 (and at most `maximum`)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise ValueError(
            f"`{name}` must be a finite number > 0, got {short_repr(value)}."
        )
    if maximum is not None and number > maximum:
        raise ValueError(
            f"`{name}` must be at most {maximum:g} (a looser tolerance leaves the "
            f"flow's accuracy, and the `converged` flag, meaningless), got {number:g}."
        )
    return number


def check_bias_options(tol, max_iter) -> tuple:
    """`implicit_bias`'s `tol` (None, or a number in (0, 1)) and `max_iter` (None,
    or an int >= 1)."""
    if tol is not None:
        tol = check_tolerance("tol", tol)
        if tol >= 1:
            raise ValueError(
                f"`tol` is a relative tolerance: it must be < 1, got {tol:g}."
            )
    if max_iter is not None:
        max_iter = check_count("max_iter", max_iter)
    return tol, max_iter


def check_count(name: str, value, minimum: int = 1) -> int:
    """A Python int >= `minimum` (bools and non-integral floats refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return int(value)


def check_steps(steps, name: str = "steps") -> int:
    """A number of steps: a Python int > 0 (bools refused)."""
    if isinstance(steps, bool) or not (
        isinstance(steps, int | np.integer) and steps > 0
    ):
        raise ValueError(f"`{name}` must be a positive int, got {steps!r}.")
    return int(steps)


def check_learning_rate(lr):
    """`lr` as a floating array, finite and > 0 (checked now when concrete; a traced
    one, under a user's `vmap`, is trusted)."""
    lr = as_float_array(lr, "lr")
    if is_concrete(lr) and not (np.all(np.isfinite(lr)) and np.all(np.asarray(lr) > 0)):
        raise ValueError(f"`lr` must be finite and > 0, got {np.asarray(lr)}.")
    return lr


def check_choice(name: str, choice, registry: dict, base: type):
    """The class a user's choice names: an instance of `base`, one of the names in
    `registry`, or `"auto"` (None: the caller's rule decides)."""
    if isinstance(choice, base):
        return type(choice)
    if isinstance(choice, str) and choice in registry:
        return registry[choice]
    if isinstance(choice, str) and choice == "auto":
        return None
    choices = ("auto", *registry)
    raise ValueError(f"`{name}` must be one of {choices}, got {short_repr(choice)}.")
