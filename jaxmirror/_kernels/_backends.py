r"""Backends as objects: the XLA path or a fused kernel, and the one rule that chooses.

`jm.sweep(..., backend=)` and `jm.train(..., backend=)` take a name (`"auto"`,
`"xla"`, `"pallas"`) or a backend object. Each name maps to its object here, once
(`BACKENDS`), and `choose_backend` decides for both entry points:

- `"xla"`: the XLA path;
- `"pallas"`: the caller's fused kernel, or a `ValueError` that says why it cannot
  run these inputs;
- `"auto"`: the kernel only on a GPU, where it can run these inputs and its design
  fits on chip, and only once it has compiled there; a kernel that does not compile
  falls back to XLA with a warning (no GPU has run these kernels yet).

What a kernel can run is the kernel's own business (`AbstractKernel`).
"""

import abc
import warnings
from typing import ClassVar

import equinox as eqx

from .._arguments import check_choice
from ._pallas import platform


class AbstractBackend(eqx.Module):
    """Where a computation runs: the XLA path, or a fused Pallas kernel."""

    name: ClassVar[str]


class XLABackend(AbstractBackend):
    """The XLA path: diffrax's loop (sweeps) or a `lax.scan` of Optax steps (training)."""

    name: ClassVar[str] = "xla"


class PallasBackend(AbstractBackend):
    """A fused Pallas kernel: many steps (and, in sweeps, a block of configurations)
    per launch, the design matrix resident."""

    name: ClassVar[str] = "pallas"


BACKENDS = {cls.name: cls for cls in (XLABackend, PallasBackend)}
"""The backends by name (`"auto"` is `choose_backend`'s rule, not a backend)."""
CHOICES = ("auto", *BACKENDS)


class AbstractKernel(eqx.Module):
    """A fused kernel for one computation, with what it needs of its inputs."""

    name: ClassVar[str]  # e.g. "the flow kernel", for messages

    @abc.abstractmethod
    def unsupported(self) -> str | None:
        """Why the kernel cannot run these inputs on `platform()`, or None."""

    @abc.abstractmethod
    def fits_on_chip(self) -> bool:
        """Whether its resident data fits in on-chip memory."""

    @abc.abstractmethod
    def compile_failure(self) -> str | None:
        """Why the kernel does not compile here for (a small part of) these inputs."""


def backend_class(backend) -> type[AbstractBackend] | None:
    """The backend class a user's choice names (None for `"auto"`)."""
    return check_choice("backend", backend, BACKENDS, AbstractBackend)


def choose_backend(backend, kernel: AbstractKernel, caller: str) -> AbstractBackend:
    """The backend that runs: `backend` as the user chose it (module docstring).

    **Arguments:**

    - `backend`: `"auto"`, `"xla"`, `"pallas"` or a backend object;
    - `kernel`: the caller's kernel for these inputs;
    - `caller`: the entry point, for the warning (`"jm.sweep"`).
    """
    chosen = backend_class(backend)
    if chosen is XLABackend:
        return XLABackend()
    reason = kernel.unsupported()
    if chosen is PallasBackend:
        if reason is not None:
            raise ValueError(f"`backend='pallas'`: {reason}; use backend='xla'.")
        return PallasBackend()
    if reason is None and platform() == "gpu" and kernel.fits_on_chip():
        failure = kernel.compile_failure()
        if failure is None:
            return PallasBackend()
        warnings.warn(
            f"{caller}: {kernel.name} did not compile here ({failure}); running the "
            "XLA path (backend='xla') instead.",
            stacklevel=3,
        )
    return XLABackend()
