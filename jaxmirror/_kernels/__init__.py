"""Fused ensemble kernels (Pallas) beside the XLA path, chosen by one backend rule.

- `_backends.py`: the backends as objects, their registry, and `choose_backend`, the
  one rule (with its compile-or-fall-back step) that `jm.sweep` and `jm.train` use;
- `_pallas.py`: what the kernels share (target, padding, the compile probe);
- `_gd.py`: gradient descent, steps fused (`jm.train`);
- `_flow.py`: the flow kernel, blocks of configurations with resident data
  (`jm.sweep`);
- `_rk.py`: the per-row adaptive Runge-Kutta loop the flow kernel runs, its
  constants read from diffrax.

Callers use the names below, never the modules' internals.
"""

from ._backends import (
    AbstractBackend as AbstractBackend,
    AbstractKernel as AbstractKernel,
    backend_class as backend_class,
    BACKENDS as BACKENDS,
    CHOICES as CHOICES,
    choose_backend as choose_backend,
    PallasBackend as PallasBackend,
    XLABackend as XLABackend,
)
from ._flow import FlowKernel as FlowKernel, solve_flow_chunk as solve_flow_chunk
from ._gd import gd_steps as gd_steps, GradientDescentKernel as GradientDescentKernel
from ._pallas import lowering_for_gpu as lowering_for_gpu, platform as platform
