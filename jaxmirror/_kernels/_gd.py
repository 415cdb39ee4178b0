r"""The gradient-descent kernel: many steps of `jm.train` in one Pallas launch.

`jm.train(..., backend="pallas")` runs each stretch of steps between two saved
iterates as one kernel: the design matrix, the targets and the parameters stay
resident while the kernel loops over the steps, instead of one XLA program step after
step. It computes what the XLA path computes: with coupled weight decay
(`optax.add_decayed_weights` then `optax.sgd`),
$$w_{k+1} = w_k + (-\eta)\big(\nabla_w f(g(w_k)) + \alpha_{k\eta}\,w_k\big),$$
the weight decays $\alpha_{k\eta}$ precomputed by the schedule's Optax form, and a
non-finite update freezing the parameters and recording its step.

Supported: `optimizer="sgd"`, one least-squares problem (`jm.AbstractLeastSquares`,
not a stack), and the diagonal pairs with exact discrete steps
(`AbstractMirrorDescentPair`: `Hadamard`, `DiffSquares`, `Square`). On a CPU the
kernel runs in Pallas interpret mode (for tests; no speed-up). On a GPU it lowers
through Triton (checked from a CPU by the tests, with `lowering_for_gpu`); it has
never run on one, and its speed is unmeasured.
"""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .._gd_step import fit_gradient, keep_finite
from .._pairs import AbstractMirrorDescentPair
from .._problems import AbstractLeastSquares
from . import _pallas as pallas
from ._backends import AbstractKernel


class GradientDescentKernel(AbstractKernel):
    """The gradient-descent kernel for one training run (`jm.train`)."""

    name: ClassVar[str] = "the gradient-descent kernel"
    problem: object
    pair: object
    optimizer: object
    w0: object

    def unsupported(self) -> str | None:
        if not (isinstance(self.optimizer, str) and self.optimizer == "sgd"):
            return f"the kernel runs optimizer='sgd' only, got {self.optimizer!r}"
        problem = self.problem
        if not isinstance(problem, AbstractLeastSquares) or problem.stack_size():
            return (
                "the kernel needs one jm.LeastSquares problem (or another "
                f"`jm.AbstractLeastSquares`), got {type(problem).__name__}"
            )
        if not isinstance(self.pair, AbstractMirrorDescentPair):
            return (
                "the kernel runs the diagonal pairs with exact discrete steps "
                f"(`AbstractMirrorDescentPair`), not {type(self.pair).__name__}"
            )
        return None

    def fits_on_chip(self) -> bool:
        return pallas.fits_on_chip(self.problem.design())

    def compile_failure(self) -> str | None:
        dtype = jax.tree_util.tree_leaves(self.w0)[0].dtype
        alphas = jnp.zeros((2,), dtype)
        lr = jnp.ones((), dtype)
        return pallas.compile_failure(
            eqx.filter_jit(gd_steps),
            self.problem,
            self.pair,
            self.w0,
            alphas,
            lr,
            0,
            -1,
        )


class _ResidentLeastSquares(eqx.Module):
    r"""The least-squares gradient as the kernels compute it, from their resident
    arrays: the products $Zx$ and $Z^\top r$ as broadcast multiplies and sums
    (Triton's `dot` takes matrices with sides of at least 16, not vectors)."""

    Z: jax.Array
    y: jax.Array

    def grad(self, x):
        residual = jnp.sum(self.Z * x[None, :], axis=1) - self.y
        return jnp.sum(self.Z * residual[:, None], axis=0)


def gd_steps(problem, pair, w, alphas, lr, start, bad_step):
    r"""`len(alphas)` steps of gradient descent from `w` (steps `start`, ...), in one
    kernel. **Returns:** the parameters and the first non-finite step (or -1).

    Every array is padded with zeros to a power-of-two side (Triton's block shapes):
    the design's zero rows and columns leave the real coordinates' steps unchanged,
    and padded parameters stay finite (zero, or decaying).
    """
    from jax.experimental import pallas as pl

    leaves, treedef = jax.tree_util.tree_flatten(w)
    count = len(leaves)
    dtype = leaves[0].dtype
    n, steps = problem.dim(), alphas.shape[0]
    Z, y = pallas.pad_design(problem)
    alphas = pallas.pad_axis(alphas, pallas.padded_side(steps), 0)
    padded_leaves = [pallas.pad_axis(leaf, pallas.padded_side(n), 0) for leaf in leaves]

    def kernel(Z_ref, y_ref, alphas_ref, scalars_ref, bad_ref, *refs):
        resident = _ResidentLeastSquares(Z_ref[...], y_ref[...])
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
        params, bad = jax.lax.fori_loop(0, steps, body, (params, first))
        for ref, leaf in zip(refs[count:], jax.tree_util.tree_leaves(params)):
            ref[...] = leaf
        refs[-1][0] = bad

    out_shape = [jax.ShapeDtypeStruct(leaf.shape, dtype) for leaf in padded_leaves]
    out_shape.append(jax.ShapeDtypeStruct((1,), jnp.int32))
    call = pl.pallas_call(kernel, out_shape=out_shape, **pallas.pallas_target())
    scalars = jnp.reshape(lr, (1,)).astype(dtype)
    counters = jnp.stack(
        [jnp.asarray(bad_step, jnp.int32), jnp.asarray(start, jnp.int32)]
    )
    outputs = call(Z, y, alphas, scalars, counters, *padded_leaves)
    params = jax.tree_util.tree_unflatten(
        treedef, [leaf[:n] for leaf in outputs[:count]]
    )
    return params, outputs[-1][0].astype(jnp.asarray(bad_step).dtype)
