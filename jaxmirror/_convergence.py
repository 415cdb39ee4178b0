r"""Has the flow reached its limit by `t1`? A Newton step towards $\dot x = 0$.

A solve that ends at `t1` with `Status.SUCCESS` has integrated the flow correctly, but
x(t1) need not be where the flow ends: after a strong weight-decay phase, coordinates
whose Legendre scale $c_a$ has shrunk move on time scales far beyond any practical
`t1`, at speeds indistinguishable from the solver's noise floor. Neither the speed
$|\dot x(t_1)|$ nor $t_1|\dot x(t_1)|$ tells these apart from a converged flow. What
does is the flow's own linearisation at the final state.

Let $y$ be the formulation's state and $v(y) = \dot x = \partial_t x + (\partial_y x)
F(t_1, y)$ the velocity of the model point it stands for. The limit is where $v = 0$.
One Newton step towards it, with the time frozen at $t_1$ and the Jacobian
$K = \partial v / \partial y$,
$$\Delta y = -K^+ v(y_1), \qquad \Delta x = (\partial_y x)\,\Delta y,$$
estimates the distance still to go, $x_\infty - x(t_1) \approx \Delta x$. ($K^+$ is the
least-squares pseudo-inverse: the state may have more coordinates than x, or flat
directions, as the parameters of an overparameterized model do.) For a flow that is
linear near its limit the step is exact, whatever its rate; it needs no closed form
and no prediction, only the formulation's field and readout, so it works for every
formulation and pair. Working with $\dot x$ rather than $\dot y$ matters: under constant
weight decay the dual coordinate keeps drifting while x stands still.

The flow counts as **converged** when
$$\max_i |\Delta x_i| \le 10\,\big(\text{atol} + \text{rtol}\cdot\max_i |x_i(t_1)|\big),$$
ten times the tolerances that the solve met step by step: the step also measures the
solve's own global error, which an adaptive solver keeps within a small multiple of
its local tolerance, and which no longer time can remove. Linearisation entries that
are not finite (coordinates frozen at 0 under an underflowed metric) are treated as
frozen; a non-finite velocity or step is never converged.

Cost: the Jacobian has (size of x) x (size of the state) entries; it is formed with
one batched JVP and the step is an SVD least-squares solve. That is cheap for the
row-space state (d x n) and costs 0.4 s (float32) to 0.9 s (float64) per configuration
for the parameter formulation at n = 1000 (1000 x 2000) on one CPU core. A matrix-free
LSMR solve was tried and rejected: on the ill-conditioned flows this check exists for,
it underestimated the distance 6,000-fold within 400 iterations.
"""

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Bool, Float

from ._formulations import AbstractFormulation
from ._problems import AbstractLinearProblem
from ._tolerances import AMPLIFICATION


def distance_to_limit(
    formulation: AbstractFormulation, t, y, problem, args
) -> Float[Array, " n"]:
    r"""The Newton estimate $\Delta x \approx x_\infty - x(t)$ (module docstring)."""
    flat, unravel = ravel_pytree(y)
    one = jnp.ones_like(t)

    def velocity(state):
        y_ = unravel(state)
        field = formulation.field(t, y_, problem, args)
        tangent = ravel_pytree(field)[0]
        point = lambda t_, s_: formulation.point(t_, unravel(s_), problem, args)
        return jax.jvp(point, (t, state), (one, tangent))[1]

    v = velocity(flat)
    K = jax.jacfwd(velocity)(flat)
    K = jnp.where(jnp.isfinite(K), K, 0.0)
    step = -jnp.linalg.lstsq(K, v)[0].astype(flat.dtype)  # K may be lower precision
    point = lambda s_: formulation.point(t, unravel(s_), problem, args)
    x, dx = jax.jvp(point, (flat,), (step,))
    return _frozen_saddles(formulation, t, problem, args, x, dx, K, v)


def _frozen_saddles(formulation, t, problem, args, x, dx, K, v):
    r"""The step, where weight decay is off, with the coordinates that floating
    point froze but the loss still pulls given the loss's own Newton step.

    A coordinate whose metric underflows (its Legendre scale $c_a$ below the
    smallest float, after strong weight decay) has a zero row in the linearisation
    and no velocity, so the Newton step leaves it where it is: at $x_i = 0$ a flow
    parked at a saddle of the parameter flow would pass for converged. In exact
    arithmetic its metric is tiny but positive, and the Newton step of
    $\dot x = -M\nabla f$ is that of the loss, whatever $M$:
    $\Delta x = -(\nabla^2 f)^+\nabla f$. With weight decay on, a frozen pulled
    coordinate can be a limit (the lasso's zeros), so the step is left alone there.
    """
    gradient = problem.grad(x)
    frozen = jnp.all(K == 0, axis=1) & (v == 0)
    tiny = 100 * jnp.finfo(x.dtype).eps * jnp.max(jnp.abs(gradient))
    pulled = frozen & (jnp.abs(gradient) > tiny) & (formulation.alpha(t, args) == 0)
    return jnp.where(pulled, loss_newton_step(problem, x, gradient), dx)


def loss_newton_step(problem, x, gradient):
    r"""$-(\nabla^2 f)^+\nabla f$ at `x`: for a loss of the predictions $\phi(Dx)$,
    the least-norm $\Delta x$ with $D\Delta x = -(\nabla^2\phi)^+\nabla\phi$ (two
    small least-squares solves, no n x n Hessian)."""
    if isinstance(problem, AbstractLinearProblem):
        design = problem.design()
        z = problem.predict(x)
        g_phi = problem.prediction_grad(z)
        H_phi = jax.jacfwd(problem.prediction_grad)(z)
        dz = -jnp.linalg.lstsq(H_phi, g_phi)[0]
        return jnp.linalg.lstsq(design, dz)[0].astype(x.dtype)
    hessian = jax.jacfwd(problem.grad)(x)
    return -jnp.linalg.lstsq(hessian, gradient)[0].astype(x.dtype)


MARGIN = 10.0  # global error against local tolerance (module docstring)


def is_converged(step, x, rtol, atol) -> Bool[Array, ""]:
    """Whether the estimated distance to the limit is within the tolerances."""
    size = jnp.max(jnp.abs(step))
    bound = MARGIN * (atol + rtol * jnp.max(jnp.abs(x)))
    return jnp.isfinite(size) & (size <= bound)


def precise(formulation, t, y, x, problem, args, options, at_rest) -> Bool[Array, ""]:
    r"""Whether the state `y` holds its point `x` to the requested accuracy.

    The solver keeps the state's error within $\text{atol} + \text{rtol}|y_j|$ per
    coordinate; through the readout $x(y)$ that becomes, to first order,
    $e_i = \sum_j |\partial x_i/\partial y_j|\,(\text{atol} + \text{rtol}|y_j|)$.
    The state is precise where $e_i \le A(\text{atol} + \text{rtol}|x_i|)$ for every
    i, with $A$ = `AMPLIFICATION`, or where the flow is at rest (`at_rest`), and
    where the formulation's own amplification at t (the most negative Legendre time
    so far, $a_t$ being non-increasing) is at most A. A closed form evaluated where
    it cancels (the plain-weight-decay deep pair once $e^{(L-2)a}$ is small)
    amplifies by orders of magnitude, and its x drifts from the flow's.
    """
    flat, unravel = ravel_pytree(y)
    point = lambda s_: formulation.point(t, unravel(s_), problem, args)
    jacobian = jax.jacfwd(point)(flat)
    state_error = options.atol + options.rtol * jnp.abs(flat)
    induced = jnp.abs(jacobian) @ state_error.astype(jacobian.dtype)
    allowed = AMPLIFICATION * (options.atol + options.rtol * jnp.abs(x))
    # Non-finite entries (a coordinate frozen by underflow) are judged elsewhere.
    holds = jnp.all(jnp.where(jnp.isfinite(induced), induced <= allowed, True))
    # A flow at rest (`at_rest`: converged, judged in x) sits at an attractor of its
    # state, which contracts what the path's errors left: the demo's constant weight
    # decay ends 4e-11 from its limit with |theta| ~ 3000, where this bound allows
    # 6e-5. Its limit depends on theta_0 and a alone, not on the path.
    holds = holds | at_rest
    # What the final state cannot show: a dual coordinate that could not follow x
    # on the way (its amplification at the most negative Legendre time, t's).
    return holds & (formulation.amplification(t, args) <= AMPLIFICATION)
