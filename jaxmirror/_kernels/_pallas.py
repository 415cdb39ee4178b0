r"""What the Pallas kernels share: where they are built for, how they are padded, and
how a kernel is tried before it is trusted.

- **Target.** On a CPU the kernels run in Pallas interpret mode (for tests: the same
  computation, no speed-up); on a GPU they lower through Triton. `lowering_for_gpu`
  builds them for a GPU from a CPU, so that the tests check their Triton lowering on
  a machine without one.
- **Padding.** Triton needs every array side to be a power of two, and its `dot`
  sides of at least 16: the kernels pad the design matrix with zero rows and columns
  (which leave every real coordinate unchanged) and the configurations to whole
  blocks.
- **Trust.** `compile_failure` lowers and compiles a kernel for given inputs and says
  why that failed, so that `backend="auto"` falls back to XLA with a warning on a
  platform where a kernel has never run, instead of failing the user's call.
"""

import contextlib
import contextvars

import jax
import jax.numpy as jnp

from .._checking import validated


# A design matrix this size fits in one SM's shared memory (H100, H200).
ON_CHIP_BYTES = 96 * 1024
MIN_SIDE = 16  # Triton's dot needs every side of a block >= 16
# None: build for the platform JAX runs on; "gpu": for a GPU, from here.
_TARGET = contextvars.ContextVar("jaxmirror_kernel_target", default=None)


@contextlib.contextmanager
def lowering_for_gpu():
    """Within this context the kernels are built for a GPU (Triton) even on a CPU,
    so that `jax.jit(f).trace(...).lower(lowering_platforms=("cuda",))` checks their
    GPU lowering on a machine without one (the tests do)."""
    token = _TARGET.set("gpu")
    try:
        yield
    finally:
        _TARGET.reset(token)


def platform() -> str:
    """The platform the kernels are built for: JAX's, unless `lowering_for_gpu`."""
    return _TARGET.get() or jax.default_backend()


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


def compile_failure(fn, *args) -> str | None:
    """Why `fn` (an `eqx.filter_jit` function) does not lower and compile for `args`
    here, or None."""
    try:
        with validated():
            fn.lower(*args).compile()
    except Exception as error:  # noqa: BLE001 - any failure means: do not use it
        first = (str(error).strip().splitlines() or [""])[0][:300]
        return f"{type(error).__name__}: {first}"
    return None


def fits_on_chip(design) -> bool:
    """Whether a design matrix fits in on-chip memory (where `"auto"` picks a kernel)."""
    return design.size * design.dtype.itemsize <= ON_CHIP_BYTES


def padded_side(size: int) -> int:
    """A kernel array's side: Triton needs powers of two (and dots, at least 16)."""
    return max(MIN_SIDE, 1 << (size - 1).bit_length())


def pad_axis(x, size, axis, mode="constant"):
    """`x` padded at the end of `axis` to `size` (zeros, or `mode="edge"`)."""
    width = [(0, 0)] * x.ndim
    width[axis] = (0, size - x.shape[axis])
    return jnp.pad(x, width, mode=mode)


def pad_design(problem):
    """A least-squares problem's design and targets padded with zero rows and
    columns to `padded_side`s: the zeros leave every real coordinate's step
    unchanged."""
    Z, y = problem.design(), problem.y
    d, n = Z.shape
    Z = pad_axis(pad_axis(Z, padded_side(d), 0), padded_side(n), 1)
    return Z, pad_axis(y, padded_side(d), 0)
