"""What every gradient-descent step shares, on the `lax.scan` path and in the kernel:
the gradient of the fit in the parameters, and the rule for a non-finite update."""

import jax
import jax.numpy as jnp


def fit_gradient(problem, pair, w):
    r"""$\nabla_w f(g(w)) = J_g(w)^\top \nabla f(x)$, one vector-Jacobian product."""
    x, pullback = jax.vjp(pair.g, w)
    (grad,) = pullback(problem.grad(x))
    return grad


def is_finite(x):
    """`jnp.isfinite(x)` as `x - x == 0` (NaN for inf and NaN): the kernels share this
    code, and JAX's Triton lowering had no `is_finite` before JAX 0.6."""
    return (x - x) == 0


def keep_finite(pair, new_w, new, old, bad_step, step):
    """Take the update `new` (whose parameters are `new_w`) unless it made w, or the
    model point x = g(w), non-finite, or an earlier step already did: then keep `old`
    and record the first such step in `bad_step` (-1 while every step was finite).

    **Returns:** `(kept, bad_step)`.
    """
    # One sum per leaf is enough (NaN and inf propagate through it) and fuses with the
    # update.
    leaves = jax.tree_util.tree_leaves((new_w, pair.g(new_w)))
    finite = is_finite(sum(jnp.sum(leaf) for leaf in leaves))
    keep = finite & (bad_step < 0)
    kept = jax.tree_util.tree_map(lambda n, o: jnp.where(keep, n, o), new, old)
    bad_step = jnp.where(~finite & (bad_step < 0), step, bad_step)
    return kept, bad_step
