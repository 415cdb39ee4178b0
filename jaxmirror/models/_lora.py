r"""LoRA: a low-rank adapter $W_0 + BA$ around a frozen linear layer."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._pairs import MatrixFactorization
from .._problems import Problem


class LoRALinear(eqx.Module):
    r"""$y = x (W_0 + BA)^\top$ with $W_0$ frozen (excluded from gradients).

    The adapter $\Delta = BA$ is the `MatrixFactorization` pair with (U, V) = (B, A^T).

    **Arguments:** `W0` (out, in), `B` (out, r), `A` (r, in).
    """

    W0: Float[Array, "o i"]
    B: Float[Array, "o r"]
    A: Float[Array, "r i"]

    def __call__(self, x: Float[Array, "... i"]) -> Float[Array, "... o"]:
        weight = jax.lax.stop_gradient(self.W0) + self.B @ self.A
        return x @ weight.T

    def adapter(self) -> Float[Array, "o i"]:
        return self.B @ self.A

    def trainable(self):
        """A filter spec (for `eqx.partition`) selecting the adapter B, A, not W0.

        Optimise only these leaves: weight decay on the whole module would also shrink
        the frozen W0, whose gradient alone `stop_gradient` zeroes.
        """
        spec = jax.tree_util.tree_map(lambda _: True, self)
        return eqx.tree_at(lambda m: m.W0, spec, replace=False)


def lora_task(
    inputs: int = 12,
    outputs: int = 10,
    rank: int = 10,
    target_rank: int = 2,
    samples: int = 40,
    seed: int = 0,
    init_scale=0.1,
):
    r"""Fine-tune a frozen random layer towards $W_0 + \Delta^*$, $\Delta^*$ of rank
    `target_rank`, from `samples` noiseless input-output pairs (fewer than the
    outputs x inputs unknowns, so the implicit bias decides which adapter is learnt).

    **Returns:** `(problem, pair, w0, W0, delta_star, held_out)`: the problem is on the
    flattened adapter $\Delta$ (mean squared error), `w0 = (B0, A0^T)` small random.
    """
    rng = np.random.default_rng(seed)
    W0 = rng.standard_normal((outputs, inputs)) / np.sqrt(inputs)
    delta = (
        rng.standard_normal((outputs, target_rank))
        @ rng.standard_normal((target_rank, inputs))
        / np.sqrt(target_rank)
    )

    def make(count):
        X = rng.standard_normal((count, inputs))
        return jnp.asarray(X), jnp.asarray(X @ (W0 + delta).T)

    def loss_for(X, Y):
        def loss(x):
            prediction = X @ (jnp.asarray(W0) + x.reshape(outputs, inputs)).T
            return 0.5 * jnp.mean(jnp.sum((prediction - Y) ** 2, axis=1))

        return Problem(loss, n=outputs * inputs)

    pair = MatrixFactorization((outputs, inputs), rank)
    w0 = pair.init(scale=init_scale, key=jax.random.PRNGKey(seed))
    return loss_for(*make(samples)), pair, w0, W0, delta, loss_for(*make(samples))
