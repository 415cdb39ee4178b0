r"""Fused kernels (Pallas) beside the XLA path.

**Gradient descent.** `jm.train(..., backend="pallas")` runs each stretch of steps
between two saved iterates as one Pallas kernel: the design matrix, the targets and the
parameters stay resident while the kernel loops over the steps, instead of one XLA
program step after step. It computes exactly what the XLA path computes: with coupled
weight decay (`optax.add_decayed_weights` then `optax.sgd`),
$$w_{k+1} = w_k + (-\eta)\big(\nabla_w f(g(w_k)) + \alpha_{k\eta}\,w_k\big),$$
the weight decays $\alpha_{k\eta}$ precomputed by the schedule's Optax form, and a
non-finite update freezing the parameters and recording its step.

Supported: `optimizer="sgd"`, a `jm.LeastSquares` problem (one, not a batch), and the
diagonal pairs with exact discrete steps (`AbstractMirrorDescentPair`: `Hadamard`,
`DiffSquares`, `Square`). On a CPU the kernel runs in Pallas interpret mode (for tests; no
speed-up). On a GPU it would lower through Triton: this has not been run on one yet,
and its speed is unmeasured.
"""

import equinox as eqx
import jax
import jax.numpy as jnp

from ._gd_step import fit_gradient, keep_finite
from ._pairs import AbstractMirrorDescentPair
from ._problems import LeastSquares


BACKENDS = ("auto", "xla", "pallas")


def gd_kernel_unsupported(problem, pair, optimizer) -> str | None:
    """Why the gradient-descent kernel cannot run this training, or None."""
    if not (isinstance(optimizer, str) and optimizer == "sgd"):
        return f"the kernel runs optimizer='sgd' only, got {optimizer!r}"
    if type(problem) is not LeastSquares or problem.Z.ndim != 2:
        return (
            "the kernel needs one jm.LeastSquares problem, got "
            f"{type(problem).__name__}"
        )
    if not isinstance(pair, AbstractMirrorDescentPair):
        return (
            "the kernel runs the diagonal pairs with exact discrete steps "
            f"(`AbstractMirrorDescentPair`), not {type(pair).__name__}"
        )
    return None


def choose_backend(backend, problem, pair, optimizer) -> str:
    """`"xla"` or `"pallas"` for `jm.train`; a `ValueError` names why the kernel
    cannot run when it was asked for explicitly."""
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, got {backend!r}.")
    reason = gd_kernel_unsupported(problem, pair, optimizer)
    if backend == "pallas":
        if reason is not None:
            raise ValueError(f"`backend='pallas'`: {reason}; use backend='xla'.")
        return "pallas"
    if backend == "auto" and reason is None and jax.default_backend() == "gpu":
        return "pallas"
    return "xla"


def gd_steps(problem, pair, w, alphas, lr, start, bad_step):
    r"""`len(alphas)` steps of gradient descent from `w` (steps `start`, ...), in one
    kernel. **Returns:** the parameters and the first non-finite step (or -1)."""
    from jax.experimental import pallas as pl

    leaves, treedef = jax.tree_util.tree_flatten(w)
    count = len(leaves)
    dtype = leaves[0].dtype

    def kernel(Z_ref, y_ref, alphas_ref, scalars_ref, bad_ref, *refs):
        # The problem with its arrays read from the kernel's resident inputs.
        resident = eqx.tree_at(lambda p: (p.Z, p.y), problem, (Z_ref[...], y_ref[...]))
        lr_ = scalars_ref[0]
        first = bad_ref[0]
        step0 = bad_ref[1]

        def body(i, carry):
            params, bad = carry
            alpha = alphas_ref[i]
            grad = fit_gradient(resident, pair, params)
            new = jax.tree_util.tree_map(
                lambda p, g: p + (-lr_) * (g + alpha * p), params, grad
            )
            step = step0 + jnp.asarray(i, bad.dtype)
            return keep_finite(pair, new, new, params, bad, step)

        params = jax.tree_util.tree_unflatten(
            treedef, [ref[...] for ref in refs[:count]]
        )
        params, bad = jax.lax.fori_loop(0, alphas_ref.shape[0], body, (params, first))
        for ref, leaf in zip(refs[count:], jax.tree_util.tree_leaves(params)):
            ref[...] = leaf
        refs[-1][0] = bad

    out_shape = [jax.ShapeDtypeStruct(leaf.shape, dtype) for leaf in leaves]
    out_shape.append(jax.ShapeDtypeStruct((1,), jnp.int32))
    interpret = jax.default_backend() == "cpu"
    call = pl.pallas_call(kernel, out_shape=out_shape, interpret=interpret)
    scalars = jnp.reshape(lr, (1,)).astype(dtype)
    counters = jnp.stack(
        [jnp.asarray(bad_step, jnp.int32), jnp.asarray(start, jnp.int32)]
    )
    outputs = call(problem.Z, problem.y, alphas, scalars, counters, *leaves)
    params = jax.tree_util.tree_unflatten(treedef, outputs[:count])
    return params, outputs[-1][0].astype(jnp.asarray(bad_step).dtype)
