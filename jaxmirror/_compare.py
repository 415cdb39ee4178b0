"""How far discrete training stays from the flow and from the predicted limit."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._discrete import TrainResult
from ._formulations import ParameterFormulation
from ._implicit_bias import implicit_bias, prediction_regime
from ._problems import as_problem
from ._solve import solve


class FlowComparison(eqx.Module):
    """Distances between a discrete run and the flow (Euclidean norms).

    **Fields:**

    - `ts`: the saved times of the discrete run.
    - `distance`: |x_discrete(t) - x_flow(t)| at each saved time.
    - `endpoint_to_flow`: the last entry of `distance`.
    - `endpoint_to_limit`: |x_discrete(T) - implicit_bias| (NaN where no limit can be
      predicted, see `jm.implicit_bias`).
    """

    ts: Float[Array, " saves"]
    distance: Float[Array, " saves"]
    endpoint_to_flow: Float[Array, ""]
    endpoint_to_limit: Float[Array, ""]


def compare_to_flow(
    problem, pair, schedule, w0, result: TrainResult, **solve_options
) -> FlowComparison:
    r"""Compare a `jm.train` run with the flow at matched times $t = k\eta$.

    Solves the flow (`jm.solve`, options passed through; default: the parameter
    formulation, which works for any pair, as `jm.train` does) saving at the run's
    times, and computes the predicted limit with `jm.implicit_bias` where one exists.
    """
    solve_options.setdefault("formulation", ParameterFormulation())
    ts = result.ts
    flow = solve(problem, pair, schedule, w0, t1=ts[-1], saveat=ts, **solve_options)
    distance = jnp.linalg.norm(result.xs - flow.xs, axis=-1)
    try:
        prediction_regime(as_problem(problem), pair, schedule)
    except ValueError:  # no closed-form limit for this problem and pair
        to_limit = jnp.array(jnp.nan)
    else:
        limit = implicit_bias(problem, pair, schedule, w0)
        to_limit = jnp.linalg.norm(result.x_final - limit)
    return FlowComparison(
        ts=ts,
        distance=distance,
        endpoint_to_flow=distance[-1],
        endpoint_to_limit=to_limit,
    )
