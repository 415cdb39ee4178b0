r"""What a chunk's final states tell, beyond the final point: whether each flow had
reached its limit, where it was predicted to end, and its loss.

Each is a compiled program of its own, run on one device: their LAPACK solves inside
loops deadlock XLA:CPU when a program is sharded over devices or runs beside another
(so they never run in host threads either).
"""

import equinox as eqx
import jax
import jax.numpy as jnp

from .._batch import Batch, stack
from .._formulations._legendre_args import legendre_args
from .._implicit_bias import _implicit_bias
from .._pairs._matrix import lift_diagonal
from .._programs import stored_program
from .._solve import final_convergence


_CONVERGENCE_BATCH = 256


@stored_program
def convergence(formulation, problem, final, status, t1, options, batch):
    """`(status, converged, distance_to_limit)` per configuration, from the final
    states (`jm.Solution`'s rule: a success whose state lost precision becomes
    `PRECISION_LOST`). Mapped in batches of `_CONVERGENCE_BATCH`
    configurations, so that its per-configuration Jacobians never hold a whole chunk
    in memory at once."""
    y1, args = final
    batched = (y1, args, problem if batch.problem else None)
    dynamic, static = eqx.partition(batched, eqx.is_array)

    def one(item):
        y, a, p = eqx.combine(item[0], static)
        p = problem if p is None else p
        return final_convergence(formulation, p, t1, y, a, item[1], options)

    size = min(_CONVERGENCE_BATCH, batch.size)
    return jax.lax.map(one, (dynamic, status), batch_size=size)


@stored_program
def predict(problem, pair, schedules, w0, tol, regime, batch, x_flow):
    """`jm.implicit_bias` per configuration, each started from where its flow ended
    (`x_flow`; a failed solve's non-finite end starts from 0): the same limit to the
    tolerance, in a few Newton iterations instead of up to 20 from 0."""

    def single(problem, schedule, w, x_end):
        args = None if regime is False else legendre_args(pair, schedule, w)
        x0 = pair.g(w)
        return _implicit_bias(
            problem, pair, schedule, x0, args, tol, None, regime, x_end
        )

    in_axes = (batch.axis(batch.problem), eqx.if_array(0), batch.axis(batch.w0), 0)
    return eqx.filter_vmap(single, in_axes=in_axes)(problem, schedules, w0, x_flow)


def commuting_reductions(problem, pair, w0, batch: Batch) -> list:
    """Each configuration's commuting reduction of a matrix pair (one when neither
    the problem nor `w0` is batched), computed eagerly with NumPy as `implicit_bias`
    does; a `ValueError` says why there is none (measurements without a common
    basis, an initialisation that is not aligned)."""
    rows = range(batch.size) if (batch.problem or batch.w0) else range(1)
    return [
        pair.commuting_reduction(
            batch.take(problem, batch.problem, k), batch.take(w0, batch.w0, k)
        )
        for k in rows
    ]


def predict_commuting(problem, pair, schedules, w0, tol, batch, x_flow):
    r"""`jm.implicit_bias` of a matrix pair after a switch-off, per configuration.

    Each configuration reduces exactly to a diagonal pair on its aligned singular
    values (`commuting_reduction`, eager); the reduced limits are computed in one
    `vmap`, each started from the flow's end read in the common basis,
    $z = \operatorname{diag}(L^\top X R)$, and lifted back,
    $X = L\,\mathrm{diag}(z)R^\top$.
    """
    reductions = commuting_reductions(problem, pair, w0, batch)
    shared = len(reductions) == 1
    lefts, rights = zip(*(r.aligned_bases() for r in reductions))
    if shared:
        left, right = lefts[0], rights[0]
        reduced_problem, reduced_w0 = reductions[0].problem, reductions[0].w0
    else:
        left, right = jnp.stack(lefts), jnp.stack(rights)
        reduced_problem = stack([r.problem for r in reductions])
        reduced_w0 = stack([r.w0 for r in reductions])
    reduced = Batch(batch.size, w0=not shared, problem=not shared)
    X = x_flow.reshape(batch.size, left.shape[-2], right.shape[-2])
    z_flow = jnp.einsum("...ik,cij,...jk->ck", left, X, right)
    diagonal_pair = reductions[0].pair
    z, status = predict(
        reduced_problem,
        diagonal_pair,
        schedules,
        reduced_w0,
        tol,
        True,
        reduced,
        z_flow,
    )

    in_axes = (None, None, 0) if shared else 0
    return jax.vmap(lift_diagonal, in_axes=in_axes)(left, right, z), status


@stored_program
def losses(problem, xs, batch):
    """f(x) per configuration."""
    return eqx.filter_vmap(
        lambda p, x: p.loss(x), in_axes=(batch.axis(batch.problem), 0)
    )(problem, xs)
