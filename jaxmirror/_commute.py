r"""A numerical check of the theorem's hypothesis: do the gradient fields commute?

For a pair (g, h) on parameters $w$, the vector fields $V_i = \nabla_w g_i$ and
$V_h = \nabla_w h$ must have vanishing Lie brackets,
$$[V_i, V_j] = \nabla^2 g_j\,V_i - \nabla^2 g_i\,V_j = 0, \qquad [V_i, V_h] = 0,$$
for $x = g(w)$ to follow a (time-varying) mirror flow. Each bracket is two
Hessian-vector products, computed with forward-over-reverse autodiff.

The paper's condition is weaker than a vanishing bracket with h: it asks that
$[V_i, V_h]$ be proportional to $V_i$, $[V_i, V_h] = c_i V_i$. `LieBrackets` reports
both, and the coefficient $c_i$. Which pairs satisfy which (measured in the tests):

| pair | $[V_i, V_j]$ | $[V_i, V_h]$ | what follows |
|---|---|---|---|
| `Hadamard`, `DiffSquares`, `Square` | 0 | 0 | $d\nabla R_{a_t}(x_t) = -\nabla f\,dt$ |
| `PowerDifference(L, "matched")` | 0 | 0 | the same, with `PowerEntropy` |
| `PowerDifference(L, "l2")` | 0 | $(2 - L)V_i$ | the same with a clock $e^{(L-2)a_t}$ |
| `LogDifference` | 0 | $2V_i$ | a fixed $R$ with a clock $e^{-2a_t}$ |
| `MatrixFactorization` (generic) | $\ne 0$ | $\ne 0$ | no mirror flow: simulate |

With vanishing $[V_i, V_j]$ and a constant $c$, the flow of $h$ maps the level sets of
g onto each other, so $x_t$ is a mirror flow whose Legendre function varies with $a_t$
and whose clock is $e^{-c a_t}$ (docs/theory.md, section 5).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int


class LieBrackets(eqx.Module):
    r"""Norms of Lie brackets of a pair's gradient fields at one point.

    **Fields:**

    - `pairs`: the index pairs (i, j) checked, shape `(P, 2)`.
    - `gg`: |[grad g_i, grad g_j]| for those pairs, shape `(P,)`.
    - `indices`: the indices i checked against h, shape `(Q,)`.
    - `gh`: |[grad g_i, grad h]|, shape `(Q,)`.
    - `gh_coefficient`: $c_i = \langle[V_i, V_h], V_i\rangle / |V_i|^2$, the best
      proportionality constant, shape `(Q,)`.
    - `gh_residual`: $|[V_i, V_h] - c_i V_i|$, zero when the bracket is proportional
      to $V_i$ (the paper's condition), shape `(Q,)`.
    - `scale`: the typical size of the products |H_j V_i| (to judge "zero").
    """

    pairs: Int[Array, "P 2"]
    gg: Float[Array, " P"]
    indices: Int[Array, " Q"]
    gh: Float[Array, " Q"]
    gh_coefficient: Float[Array, " Q"]
    gh_residual: Float[Array, " Q"]
    scale: Float[Array, ""]

    @property
    def max_gg(self):
        """The largest bracket between two fields of g."""
        return jnp.max(self.gg)

    @property
    def max_gh(self):
        """The largest bracket between a field of g and the field of h."""
        return jnp.max(self.gh)

    @property
    def max_gh_residual(self):
        """The largest part of a bracket with h that is not proportional to its field."""
        return jnp.max(self.gh_residual)


def lie_brackets(pair, w, *, measurements=None, max_pairs: int = 500, key=None):
    r"""Lie brackets of $\nabla g_i$ (and $\nabla h$) at the parameters `w`.

    **Arguments:**

    - `pair`: any pair; `w`: parameters at which to evaluate.
    - `measurements`: optional `(d, n)` matrix M: check the composite maps
      $\tilde g = M g(w)$ (e.g. matrix sensing's measurement operator, flattened).
    - `max_pairs`: check all index pairs when there are at most this many, else a random
      subset of this size (drawn with `key`, default `PRNGKey(0)`).

    **Returns:** a `LieBrackets`. For commuting pairs (`Hadamard`, `DiffSquares`,
    `Square`, matched `PowerDifference`) every bracket is zero to rounding; for
    `PowerDifference(L, "l2")` and `LogDifference` the brackets with h are
    proportional to the fields (see the module docstring); for $UV^\top$ they are not.
    """
    flat, unravel = ravel_pytree(w)

    def g(v):
        x = pair.g(unravel(v))
        return x if measurements is None else jnp.asarray(measurements) @ x

    def h(v):
        return pair.h(unravel(v))

    n = jax.eval_shape(g, flat).shape[0]
    fields = jax.jacrev(g)(flat)  # row i is V_i = grad g_i
    all_pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    key = jax.random.PRNGKey(0) if key is None else key
    if len(all_pairs) > max_pairs:
        chosen = jax.random.choice(key, len(all_pairs), (max_pairs,), replace=False)
        all_pairs = [all_pairs[int(c)] for c in chosen]
    pairs = np.array(all_pairs, dtype=np.int32).reshape(-1, 2)

    def hvp(i, vector):
        return jax.jvp(lambda v: jax.grad(lambda u: g(u)[i])(v), (flat,), (vector,))[1]

    def bracket(ij):
        i, j = ij[0], ij[1]
        first, second = hvp(j, fields[i]), hvp(i, fields[j])
        return jnp.linalg.norm(first - second), jnp.linalg.norm(first)

    gg, sizes = (
        jax.lax.map(bracket, jnp.asarray(pairs))
        if len(pairs)
        else (jnp.zeros(0), jnp.zeros(0))
    )
    grad_h = jax.grad(h)(flat)
    indices = np.arange(min(n, max_pairs), dtype=np.int32)

    def bracket_h(i):
        with_h = jax.jvp(jax.grad(h), (flat,), (fields[i],))[1]
        bracket = with_h - hvp(i, grad_h)
        field = fields[i]
        coefficient = jnp.dot(bracket, field) / jnp.dot(field, field)
        residual = jnp.linalg.norm(bracket - coefficient * field)
        return jnp.linalg.norm(bracket), coefficient, residual

    gh, coefficient, residual = jax.lax.map(bracket_h, jnp.asarray(indices))
    scale = jnp.mean(sizes) if len(pairs) else jnp.array(0.0)
    return LieBrackets(
        jnp.asarray(pairs), gg, jnp.asarray(indices), gh, coefficient, residual, scale
    )
