r"""Single-layer softmax attention whose score matrix $W_QW_K^\top$ is a factorization pair."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._pairs import MatrixFactorization
from .._problems import Problem


def _attend(scores_matrix, tokens):
    scores = tokens @ scores_matrix @ tokens.T
    return jax.nn.softmax(scores, axis=-1) @ tokens


class SoftmaxAttention(eqx.Module):
    r"""$\operatorname{Attn}(E) = \operatorname{softmax}(E W_Q W_K^\top E^\top)\,E$.

    The value map is the identity, so the model depends on $W_Q, W_K$ only through the
    score matrix $X = W_QW_K^\top$ (embedding x embedding): the `MatrixFactorization`
    pair with (U, V) = (W_Q, W_K).

    **Arguments:** `W_Q`, `W_K`: the (embedding, rank) factors.
    """

    W_Q: Float[Array, "e r"]
    W_K: Float[Array, "e r"]

    def __call__(self, tokens: Float[Array, "T e"]) -> Float[Array, "T e"]:
        return _attend(self.W_Q @ self.W_K.T, tokens)

    def product(self) -> Float[Array, "e e"]:
        return self.W_Q @ self.W_K.T


def attention_task(
    embedding: int = 8,
    rank: int = 8,
    target_rank: int = 2,
    sequences: int = 64,
    length: int = 6,
    seed: int = 0,
    init_scale=0.1,
):
    r"""A synthetic task whose target score matrix has rank `target_rank`.

    Tokens are i.i.d. $N(0, I/\text{embedding})$; targets are the teacher's outputs
    $\operatorname{softmax}(E X^* E^\top)E$ with $X^* = 3\,LR^\top/\sqrt{\text{target\_rank}}$.
    The loss is the mean squared error over sequences.

    **Returns:** `(problem, pair, w0, X_star, held_out)` where `problem` is on the
    flattened score matrix, `pair = MatrixFactorization((e, e), rank)`, `w0` small random
    factors, and `held_out` a validation `Problem` on fresh sequences.
    """
    rng = np.random.default_rng(seed)
    e = embedding
    X_star = (
        3.0
        * rng.standard_normal((e, target_rank))
        @ rng.standard_normal((target_rank, e))
        / np.sqrt(target_rank)
    )

    def make(count):
        tokens = rng.standard_normal((count, length, e)) / np.sqrt(e)
        targets = np.asarray(
            jax.vmap(lambda E: _attend(jnp.asarray(X_star), E))(tokens)
        )
        return jnp.asarray(tokens), jnp.asarray(targets)

    def loss_for(tokens, targets):
        def loss(x):
            out = jax.vmap(lambda E: _attend(x.reshape(e, e), E))(tokens)
            return jnp.mean(jnp.sum((out - targets) ** 2, axis=(1, 2)))

        return Problem(loss, n=e * e)

    train, held = make(sequences), make(sequences)
    pair = MatrixFactorization((e, e), rank)
    w0 = pair.init(scale=init_scale, key=jax.random.PRNGKey(seed))
    return loss_for(*train), pair, w0, X_star, loss_for(*held)
