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
speed-up). On a GPU it lowers through Triton (checked from a CPU by the tests, with
`lowering_for_gpu`); it has never run on one, and its speed is unmeasured.

This module also holds what both kernels share: the backend choice, the Pallas target
(interpret mode or Triton), the power-of-two padding Triton needs, and the compile
probe `"auto"` runs before it trusts a kernel. The flow kernel is `_flow_kernel.py`.
"""

import contextlib

import equinox as eqx
import jax
import jax.numpy as jnp

from ._gd_step import fit_gradient, keep_finite
from ._pairs import AbstractMirrorDescentPair
from ._problems import LeastSquares


BACKENDS = ("auto", "xla", "pallas")
# A design matrix this size fits in one SM's shared memory (H100, H200).
ON_CHIP_BYTES = 96 * 1024
_TARGET = {"platform": None}  # None: where JAX runs; "gpu": lower for a GPU from here


@contextlib.contextmanager
def lowering_for_gpu():
    """Within this context the kernels are built for a GPU (Triton) even on a CPU,
    so that `jax.jit(f).trace(...).lower(lowering_platforms=("cuda",))` checks their
    GPU lowering on a machine without one (the tests do)."""
    _TARGET["platform"] = "gpu"
    try:
        yield
    finally:
        _TARGET["platform"] = None


def platform() -> str:
    """The platform the kernels are built for: JAX's, unless `lowering_for_gpu`."""
    return _TARGET["platform"] or jax.default_backend()


def compile_failure(fn, *args) -> str | None:
    """Why `fn` (an `eqx.filter_jit` function) does not lower and compile for `args`
    here, or None. `"auto"` runs this before it trusts a kernel: on a platform where
    a kernel has never been run, a failing compilation falls back to XLA with a
    warning instead of failing the user's call."""
    from ._validation import validated

    try:
        with validated():
            fn.lower(*args).compile()
    except Exception as error:  # noqa: BLE001 - any failure means: do not use it
        first = (str(error).strip().splitlines() or [""])[0][:300]
        return f"{type(error).__name__}: {first}"
    return None


def pallas_target() -> dict:
    """How `pallas_call` runs here: interpret mode on a CPU; on a GPU, Triton. (JAX's
    default GPU lowering is now Mosaic GPU, which has no rules for these kernels'
    loops over masked blocks.)"""
    if platform() == "cpu":
        return dict(interpret=True)
    try:
        from jax.experimental.pallas import triton as pltriton
    except ImportError:  # older JAX: Triton was the only GPU lowering
        return {}
    # `CompilerParams` since JAX 0.6; `TritonCompilerParams` before.
    params = getattr(pltriton, "CompilerParams", None) or pltriton.TritonCompilerParams
    return dict(compiler_params=params(num_warps=4, num_stages=1))


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
    if backend == "auto" and reason is None and platform() == "gpu":
        return "pallas" if fits_on_chip(problem) else "xla"
    return "xla"


def fits_on_chip(problem) -> bool:
    """Whether the design matrix fits in on-chip memory (where `"auto"` picks a kernel)."""
    return problem.Z.size * problem.Z.dtype.itemsize <= ON_CHIP_BYTES


MIN_SIDE = 16  # Triton's dot needs every side of a block >= 16


def power_of_two(size: int) -> int:
    """The smallest power of two >= `size` (Triton's array sizes)."""
    return 1 << (size - 1).bit_length()


def padded_side(size: int) -> int:
    """A kernel array's side: Triton needs powers of two (and dots, at least 16)."""
    return max(MIN_SIDE, power_of_two(size))


def pad_design(problem):
    """The least-squares design and targets padded with zero rows and columns to
    `padded_side`s: the zeros leave every real coordinate's step unchanged."""
    d, n = problem.Z.shape
    Z = pad_axis(pad_axis(problem.Z, padded_side(d), 0), padded_side(n), 1)
    return Z, pad_axis(problem.y, padded_side(d), 0)


def pad_axis(x, size, axis, mode="constant"):
    """`x` padded at the end of `axis` to `size` (zeros, or `mode="edge"`)."""
    width = [(0, 0)] * x.ndim
    width[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, width, mode=mode)


class _ResidentLeastSquares(eqx.Module):
    r"""Least squares as the kernel computes it, from its resident arrays: the
    products $Zx$ and $Z^\top r$ as broadcast multiplies and sums (Triton's `dot`
    takes matrices with sides of at least 16, not vectors)."""

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
    n, steps = problem.Z.shape[1], alphas.shape[0]
    Z, y = pad_design(problem)
    alphas = pad_axis(alphas, padded_side(steps), 0)
    padded_leaves = [pad_axis(leaf, padded_side(n), 0) for leaf in leaves]

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
    call = pl.pallas_call(kernel, out_shape=out_shape, **pallas_target())
    scalars = jnp.reshape(lr, (1,)).astype(dtype)
    counters = jnp.stack(
        [jnp.asarray(bad_step, jnp.int32), jnp.asarray(start, jnp.int32)]
    )
    outputs = call(Z, y, alphas, scalars, counters, *padded_leaves)
    params = jax.tree_util.tree_unflatten(
        treedef, [leaf[:n] for leaf in outputs[:count]]
    )
    return params, outputs[-1][0].astype(jnp.asarray(bad_step).dtype)
