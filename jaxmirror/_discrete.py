r"""The discrete counterpart: Optax optimizers on the parameters, with the same schedule.

Gradient descent with step $\eta$ and coupled weight decay
(`optax.add_decayed_weights(alpha)` then `optax.sgd(eta)`) is the explicit Euler
discretisation of the flow $\dot w = -\nabla_w[f(g(w)) + \alpha_t h(w)]$: step $k$ is
time $t = k\eta$ and uses $\alpha_{k\eta}$. Its endpoint approaches the flow's at first
order as $\eta \to 0$. AdamW's decoupled decay is another geometry: jaxmirror runs it for
empirical comparison and claims no theory for it.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PyTree

from ._arguments import check_inputs, check_learning_rate, check_steps
from ._checking import is_concrete
from ._gd_step import fit_gradient, keep_finite
from ._kernels import choose_backend, gd_steps, GradientDescentKernel, PallasBackend
from ._status import Status


class TrainResult(eqx.Module):
    """The result of `train`.

    **Fields:**

    - `steps`: the saved step indices, shape `(saves,)`; the first is 0, the last is
      the final step.
    - `ts`: the matching flow times `steps * lr`.
    - `xs`: x at the saved steps, shape `(saves, n)` (the final point last).
    - `ws`: the parameters at the saved steps (leading `saves` axis).
    - `loss`: the final loss f(x) (data term only).
    - `status`: `Status.SUCCESS`, or `Status.NONFINITE` if an update made w or x = g(w)
      non-finite; the parameters then stay at the last finite iterate.
    - `nonfinite_step`: the first step whose update was non-finite, or -1.
    """

    steps: Int[Array, " saves"]
    ts: Float[Array, " saves"]
    xs: Float[Array, "saves n"]
    ws: PyTree
    loss: Float[Array, ""]
    status: Int[Array, ""]
    nonfinite_step: Int[Array, ""]

    @property
    def x_final(self) -> Float[Array, " n"]:
        """x at the final step."""
        return self.xs[..., -1, :]


_OPTIMIZERS = {
    "sgd": lambda lr, decay, momentum: optax.chain(decay, optax.sgd(lr)),
    "momentum": lambda lr, decay, momentum: optax.chain(
        decay, optax.sgd(lr, momentum=momentum)
    ),
    "adam": lambda lr, decay, momentum: optax.chain(decay, optax.adam(lr)),
    # Decoupled: the decay is added after Adam's scaling (Loshchilov & Hutter).
    "adamw": lambda lr, decay, momentum: optax.chain(
        optax.scale_by_adam(), decay, optax.scale_by_learning_rate(lr)
    ),
}
OPTIMIZERS = tuple(_OPTIMIZERS)
"""The optimizers `jm.train` knows by name (any `optax.GradientTransformation` too)."""


def check_optimizer(optimizer):
    """A name in `OPTIMIZERS` or an `optax.GradientTransformation`."""
    if isinstance(optimizer, optax.GradientTransformation) or (
        isinstance(optimizer, str) and optimizer in _OPTIMIZERS
    ):
        return optimizer
    raise ValueError(
        f"`optimizer` must be one of {OPTIMIZERS} or an optax.GradientTransformation, "
        f"got {optimizer!r}."
    )


def make_optimizer(optimizer, lr, schedule, momentum: float = 0.9):
    r"""The Optax transformation for `optimizer` with the schedule's weight decay.

    Coupled decay (the gradient of $\alpha_t h$ joins the loss gradient) for `"sgd"`,
    `"momentum"`, `"adam"` and user transformations; decoupled for `"adamw"`
    (Loshchilov & Hutter): $w \leftarrow w - \eta(\text{adam}(g) + \alpha_t w)$.
    """
    optimizer = check_optimizer(optimizer)
    schedule_at = schedule.as_optax(lr)
    dtype = jnp.result_type(lr)  # a float32 run stays float32 with a float64 schedule
    decay = optax.add_decayed_weights(lambda count: schedule_at(count).astype(dtype))
    if isinstance(optimizer, optax.GradientTransformation):
        return optax.chain(decay, optimizer)
    return _OPTIMIZERS[optimizer](lr, decay, momentum)


def _check_learning_rate(optimizer, lr) -> None:
    """A user transformation must step by `lr`: step k is time k * lr.

    Its first update of a unit gradient is probed: SGD, momentum, Adam and AdamW all
    move by the learning rate (Adam to within its epsilon).
    """
    with jax.ensure_compile_time_eval(), jax.numpy_dtype_promotion("standard"):
        zero = jnp.zeros((), lr.dtype)
        update, _ = optimizer.update(jnp.ones_like(zero), optimizer.init(zero), zero)
        step = abs(float(update))
    if not np.isclose(step, float(lr), rtol=1e-6, atol=0.0):
        raise ValueError(
            f"`optimizer`: its first step moves a unit gradient by {step:.6g}, but "
            f"`lr` = {float(lr):.6g}; jm.train maps step k to time k * lr, so the "
            "optimizer's learning rate must be `lr` (e.g. optax.sgd(lr))."
        )


def _check_weight_decay(pair, w0):
    """`add_decayed_weights` adds alpha * w: the pair's h must be 1/2 |w|^2."""
    if not is_concrete(w0):
        return
    with jax.ensure_compile_time_eval():
        grad_h = jax.grad(pair.h)(w0)
        same = jax.tree_util.tree_map(
            lambda gh, w: np.allclose(gh, w, rtol=1e-12), grad_h, w0
        )
    if not all(jax.tree_util.tree_leaves(same)):
        raise ValueError(
            f"`pair`: train applies weight decay through optax.add_decayed_weights, which "
            f"needs h(w) = 1/2 |w|^2; {type(pair).__name__}.h has another gradient."
        )


def train(
    problem,
    pair,
    schedule,
    w0,
    optimizer="sgd",
    *,
    lr,
    steps: int,
    save_every: int | None = None,
    backend: str = "auto",
) -> TrainResult:
    r"""Train the parameters with an Optax optimizer and the schedule's weight decay.

    Step $k$ uses the weight decay $\alpha_{k\eta}$ ($\eta$ = `lr`), so `steps` steps of
    `"sgd"` follow the flow up to time `steps * lr`:
    $$w_{k+1} = w_k - \eta\big(J_g(w_k)^\top\nabla f(g(w_k)) + \alpha_{k\eta} w_k\big).$$

    Runs as one `lax.scan` inside `jit`; `vmap` over schedules, learning rates,
    initialisations (and seeds, through the initialisations) works. A non-finite update
    is recorded in `status` and `nonfinite_step` and the parameters stay finite.

    **Arguments:**

    - `problem`, `pair`, `schedule`, `w0`: as for `jm.solve`; the pair's `h` must be
      weight decay, $\tfrac12|w|^2$.
    - `optimizer`: `"sgd"`, `"momentum"` (0.9), `"adam"`, `"adamw"` (decoupled decay),
      or any `optax.GradientTransformation` (then the weight decay is added to the
      gradient before it; its own learning rate should be `lr`).
    - `lr`: the learning rate $\eta > 0$ (an array under `vmap`).
    - `steps`: the number of steps (a Python int > 0).
    - `save_every`: save every this many steps (default: about 100 saves).
    - `backend`: `"xla"` (a `lax.scan` of Optax steps), `"pallas"` (a fused Pallas
      kernel per stretch between saves, see `jaxmirror._kernels`: SGD, one
      `LeastSquares` problem, `Hadamard`, `DiffSquares` or `Square`; interpret mode on
      a CPU), or
      `"auto"` (default: the kernel on a GPU where it applies, else XLA).

    **Returns:** a `TrainResult` (`.xs`, `.ws`, `.loss`, `.status`, ...).
    """
    steps = check_steps(steps)
    save_every = max(1, steps // 100) if save_every is None else save_every
    if not (isinstance(save_every, int | np.integer) and 0 < save_every <= steps):
        raise ValueError(
            f"`save_every` must be an int in [1, steps] = [1, {steps}], got {save_every!r}."
        )
    optimizer = check_optimizer(optimizer)
    lr = check_learning_rate(lr)
    if isinstance(optimizer, optax.GradientTransformation) and is_concrete(lr):
        _check_learning_rate(optimizer, lr)
    problem, w0 = check_inputs(problem, pair, schedule, w0)
    _check_weight_decay(pair, w0)
    kernel = GradientDescentKernel(problem, pair, optimizer, w0)
    fused = isinstance(choose_backend(backend, kernel, "jm.train"), PallasBackend)
    return _train(
        problem, pair, schedule, w0, lr, steps, int(save_every), optimizer, fused
    )


@eqx.filter_jit
def _train(problem, pair, schedule, w0, lr, steps, save_every, optimizer, kernel):
    tx = make_optimizer(optimizer, lr, schedule)
    decay = schedule.as_optax(lr)  # the weight decay of step k, as Optax applies it

    def step(carry, k):
        w, opt_state, bad_step = carry
        # Optax mixes int step counts with floats: not clean under strict promotion.
        with jax.numpy_dtype_promotion("standard"):
            updates, new_state = tx.update(fit_gradient(problem, pair, w), opt_state, w)
        new_w = optax.apply_updates(w, updates)
        (w, opt_state), bad_step = keep_finite(
            pair, new_w, (new_w, new_state), (w, opt_state), bad_step, k
        )
        return (w, opt_state, bad_step), None

    def chunk(carry, start, length):
        counts = start + jnp.arange(length)
        if kernel:  # the same steps, fused into one Pallas kernel
            w, opt_state, bad_step = carry
            with jax.numpy_dtype_promotion("standard"):
                alphas = jax.vmap(decay)(counts).astype(lr.dtype)
            w, bad_step = gd_steps(problem, pair, w, alphas, lr, start, bad_step)
            return w, opt_state, bad_step
        carry, _ = jax.lax.scan(step, carry, counts)
        return carry

    carry = (w0, tx.init(w0), jnp.array(-1))
    n_chunks, remainder = divmod(steps, save_every)

    def saved_chunk(carry, start):
        carry = chunk(carry, start, save_every)
        return carry, carry[0]

    starts = jnp.arange(n_chunks) * save_every
    carry, ws = jax.lax.scan(saved_chunk, carry, starts)
    ws = jax.tree_util.tree_map(
        lambda first, rest: jnp.concatenate([first[None], rest]), w0, ws
    )
    saved_steps = np.arange(n_chunks + 1) * save_every
    if remainder:
        carry = chunk(carry, n_chunks * save_every, remainder)
        ws = jax.tree_util.tree_map(
            lambda all_, last: jnp.concatenate([all_, last[None]]), ws, carry[0]
        )
        saved_steps = np.append(saved_steps, steps)
    xs = jax.vmap(pair.g)(ws)
    bad_step = carry[2]
    status = jnp.where(bad_step < 0, Status.SUCCESS, Status.NONFINITE).astype(jnp.int32)
    saved_steps = jnp.asarray(saved_steps)
    return TrainResult(
        steps=saved_steps,
        ts=saved_steps.astype(lr.dtype) * lr,
        xs=xs,
        ws=ws,
        loss=problem.loss(xs[-1]),
        status=status,
        nonfinite_step=bad_step,
    )
