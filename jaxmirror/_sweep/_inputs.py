r"""A sweep's inputs, checked, with which of them carry the configuration axis.

The schedules always carry it (their scalar parameters are repeated along it); the
initial parameters carry it where `g` maps them to a batch of points; a problem
carries it where it is a stack of instances (`jm.AbstractDataProblem.stack_size`).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._arguments import check_pair, check_point_of, check_schedule
from .._batch import Batch
from .._checking import as_float_array, is_concrete
from .._pairs import AbstractMatrixPair
from .._problems import AbstractDataProblem, as_problem


def _broadcast_schedules(schedules):
    """The schedules with scalar parameters repeated along the one configuration axis."""
    batch = jax.eval_shape(schedules, 0.0).shape
    if len(batch) != 1:
        raise ValueError(
            "`schedules` must be a batch of schedules with one configuration axis, e.g. "
            "jm.SwitchOff(alpha=A, t_off=T) with A (and T, or a scalar) of shape (K,); "
            f"got batch shape {batch}."
        )

    def broadcast(leaf):
        if eqx.is_array(leaf) and leaf.ndim == 0:
            return jnp.broadcast_to(leaf, batch)
        return leaf

    return jax.tree_util.tree_map(broadcast, schedules), batch[0]


def _is_batched_w0(pair, w0) -> bool:
    """Whether `w0` carries a configuration axis: g(w0) has two axes instead of one,
    or, for a pair whose g takes only one point (a matrix factorization's U U^T),
    g mapped over the leading axis does. A matrix pair's factors say it by their
    shapes: its g flattens a matrix product that broadcasts over leading axes (a
    batch of one, or of n, would otherwise pass for one point)."""
    if isinstance(pair, AbstractMatrixPair):
        leaves = jax.tree_util.tree_leaves(w0)
        return len(leaves) == len(pair.factor_shapes) and all(
            np.ndim(leaf) == len(shape) + 1
            for leaf, shape in zip(leaves, pair.factor_shapes)
        )
    for g in (pair.g, jax.vmap(pair.g)):
        try:
            return len(jax.eval_shape(g, w0).shape) == 2
        except Exception:  # noqa: BLE001, PERF203 - `check_point_of` reports it
            continue
    return False


def _is_stacked(problem) -> bool:
    """Whether the problem is a stack of instances, one per configuration."""
    return isinstance(problem, AbstractDataProblem) and problem.stack_size() is not None


def check_batch(problem, pair, schedules, w0):
    """The sweep's inputs checked, and the `Batch` they form.

    **Returns:** `(problem, schedules, w0, batch)`, the schedules broadcast along the
    configuration axis.
    """
    problem = as_problem(problem)
    check_pair(pair)
    check_schedule(schedules, "schedules")
    w0 = jax.tree_util.tree_map(lambda leaf: as_float_array(leaf, "w0"), w0)
    w0_batched = _is_batched_w0(pair, w0)
    w0 = check_point_of(problem, pair, w0, batched=w0_batched)
    schedules, size = _broadcast_schedules(schedules)
    stacked = _is_stacked(problem)
    leads = (
        (
            "w0",
            w0_batched,
            w0_batched and jax.eval_shape(jax.vmap(pair.g), w0).shape[0],
        ),
        ("problem", stacked, stacked and problem.stack_size()),
    )
    for name, batched, lead in leads:
        if batched and lead != size:
            raise ValueError(
                f"`{name}` is batched with leading size {lead}, but `schedules` has "
                f"{size} configurations; batched inputs must share the configuration "
                "axis."
            )
    if not is_concrete(schedules, w0, problem):
        raise ValueError(
            "`sweep` runs eagerly: pass concrete arrays, not traced values."
        )
    return problem, schedules, w0, Batch(size, w0_batched, stacked)


def check_labels_and_truth(labels, truth, size: int, n):
    """`labels` of shape `(K,)` each; `truth` of shape `(n,)` or `(K, n)`, as NumPy."""
    for name, value in (labels or {}).items():
        if np.shape(value) != (size,):
            raise ValueError(
                f"`labels[{name!r}]` must have shape ({size},), got {np.shape(value)}."
            )
    if truth is None:
        return None
    truth = np.asarray(truth)
    if np.iscomplexobj(truth) or not np.issubdtype(truth.dtype, np.number):
        raise ValueError(f"`truth` must be real numbers, got {truth.dtype}.")
    truth = truth.astype(float)
    if truth.shape not in ((n,), (size, n)):
        raise ValueError(f"`truth` must have shape (n,) or (K, n), got {truth.shape}.")
    if not np.all(np.isfinite(truth)):
        raise ValueError("`truth` must be finite (no NaN or inf).")
    return truth
