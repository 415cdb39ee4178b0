r"""The status vocabulary: every outcome code jaxmirror reports, with its meaning.

Inside `jit` nothing raises: a solve, a prediction or a training run reports how it
ended as an integer code in an array (one per configuration in a sweep). The codes are
IntEnums whose members carry a message, after diffrax's `RESULTS`:

```python
sol = jm.solve(...)
jm.Status(int(sol.status)).message
```

Both vocabularies share their numbering where their meanings coincide (0 success,
1 out of steps or iterations, 2 non-finite), so a sweep's `status` and `bias_status`
read the same way.
"""

import enum


class _StatusEnum(enum.IntEnum):
    """An IntEnum whose members carry a one-line message."""

    def __new__(cls, value: int, message: str):
        member = int.__new__(cls, value)
        member._value_ = value
        member.message = message
        return member

    @classmethod
    def flag_attributes(cls) -> dict:
        """CF-convention attributes describing the codes (`flag_values`, `flag_meanings`)."""
        return {
            "flag_values": [int(member) for member in cls],
            "flag_meanings": " ".join(member.name.lower() for member in cls),
        }


class Status(_StatusEnum):
    """How a flow (`jm.solve`, `jm.sweep`) or a training run (`jm.train`) ended.

    - `SUCCESS` (0): reached the final time (or step) with finite values.
    - `MAX_STEPS` (1): the step budget `max_steps` ran out before `t1`.
    - `NONFINITE` (2): the state or its vector field became non-finite (NaN or inf).
    - `SOLVER_FAILURE` (3): the ODE solver failed for another reason.
    - `PRECISION_LOST` (4): reached the final time, but the formulation's state there
      no longer holds x to the requested accuracy (its error, within the
      tolerances, is amplified more than 1e3 times in x): run another formulation
      (`"parameter"` or `"mirror"`).
    """

    SUCCESS = 0, "reached t1 with finite values"
    MAX_STEPS = 1, "ran out of steps (`max_steps`) before t1"
    NONFINITE = 2, "the state or its vector field became non-finite (NaN or inf)"
    SOLVER_FAILURE = 3, "the ODE solver failed"
    PRECISION_LOST = (
        4,
        "the state no longer holds x to the requested accuracy (use another "
        "formulation)",
    )


class BiasStatus(_StatusEnum):
    """How a prediction (`jm.implicit_bias`, `jm.discrete_implicit_bias`) ended.

    - `CONVERGED` (0): the optimality conditions hold to the tolerance.
    - `MAX_ITERATIONS` (1): the iteration cap `max_iter` ran out first.
    - `NONFINITE` (2): the iteration produced a non-finite value.
    """

    CONVERGED = 0, "the optimality conditions hold to the tolerance"
    MAX_ITERATIONS = 1, "the iteration cap `max_iter` ran out first"
    NONFINITE = 2, "the iteration produced a non-finite value"


def _choose(flag, if_true, if_false):
    """`if_true` where `flag`, else `if_false`, as int32: by arithmetic on the flag,
    so that the same code runs inside a Pallas kernel (where `jnp.where` of two
    Python ints would make constants, which a kernel may not capture: JAX < 0.6)."""
    flag = flag.astype("int32")
    return if_false + (if_true - if_false) * flag


def status_code(reached_t1, out_of_steps, x_finite, field_finite):
    r"""The `Status` of a flow from how its solver ended and what it left.

    The one derivation shared by `jm.solve`, both sweep strategies and the flow
    kernel (elementwise, so it serves one flow or a batch).

    **Arguments** (boolean arrays):

    - `reached_t1`: the solver reached t1;
    - `out_of_steps`: else, it stopped because its step budget ran out;
    - `x_finite`: the model point x at the last state reached is finite;
    - `field_finite`: the vector field at that state is finite.

    A non-finite vector field explains a failure (the step-size controller rejects
    non-finite steps until the budget runs out), so it reads `NONFINITE`, not
    `MAX_STEPS`.
    """
    finite = x_finite & field_finite
    failed = _choose(
        ~field_finite,
        int(Status.NONFINITE),
        _choose(out_of_steps, int(Status.MAX_STEPS), int(Status.SOLVER_FAILURE)),
    )
    done = _choose(finite, int(Status.SUCCESS), int(Status.NONFINITE))
    return _choose(reached_t1, done, failed).astype("int32")


def with_precision(status, precise):
    """`status`, with a success whose final state lost the requested accuracy in x
    (`precise` False) reported as `PRECISION_LOST`: the last step of the one
    derivation above, taken where the final state is examined."""
    lost = (status == int(Status.SUCCESS)) & ~precise
    return _choose(lost, int(Status.PRECISION_LOST), status).astype("int32")
