"""Singular values, numerical rank and nuclear norm of product matrices over training."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


class SpectralTrace(eqx.Module):
    """Spectral summaries of a sequence of matrices (one row per saved step).

    **Fields:** `singular_values` (saves, k), `rank` (saves,) at the threshold,
    `nuclear_norm` (saves,), `threshold` (relative to the largest singular value).
    """

    singular_values: Float[Array, "saves k"]
    rank: Int[Array, " saves"]
    nuclear_norm: Float[Array, " saves"]
    threshold: float = eqx.field(static=True)


def spectral_trace(xs, shape, threshold: float = 1e-3) -> SpectralTrace:
    r"""Summaries of matrices given flattened (`xs`: (saves, n1*n2)) or as (saves, n1, n2).

    The rank counts singular values above `threshold` times the largest one.
    """
    matrices = jnp.reshape(xs, (-1,) + tuple(shape))
    sv = jnp.linalg.svd(matrices, compute_uv=False)
    rank = jnp.sum(sv > threshold * sv[:, :1], axis=1)
    return SpectralTrace(sv, rank, jnp.sum(sv, axis=1), threshold)
