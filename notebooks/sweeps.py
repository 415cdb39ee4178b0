# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Sweeps: a phase diagram as xarray, stored in Zarr, resumed
#
# `jm.sweep` runs many configurations of one problem (here a grid of switch-off
# schedules), vectorized and sharded over every device, writes them chunk by chunk into
# a Zarr store as it goes, and returns an `xarray.Dataset`. An interrupted sweep
# resumes without recomputing finished chunks; where `jm.implicit_bias` can predict the
# limit, the dataset holds the prediction beside the simulation.

# %%
import pathlib
import tempfile
import time

import jax


jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import matplotlib.pyplot as plt  # noqa: F401  (the notebook's inline figures)
import numpy as np

import jaxmirror as jm
from jaxmirror.experiments import default_scale


jm.enable_compilation_cache()
scale = default_scale()  # "full" on an accelerator, "small" on a CPU, "tiny" in tests
n, d, side = {"tiny": (30, 12, 3), "small": (100, 40, 8), "full": (200, 80, 32)}[scale]
print("backend:", jax.default_backend(), "| scale:", scale, f"| grid {side} x {side}")

# %% [markdown]
# ## One call, a grid of schedules
#
# `jm.grid` builds the outer product of the axes; a schedule whose parameters carry a
# leading axis is a batch of schedules.

# %%
problem, x_star = jm.datasets.sparse_regression(n=n, d=d, sparsity=3, seed=0)
pair = jm.Hadamard()
w0 = pair.init(jnp.zeros(n), scale=1.0)
axes = jm.grid(alpha=np.geomspace(0.01, 0.1, side), t_off=np.linspace(5.0, 60.0, side))
schedules = jm.SwitchOff(**axes)

store = pathlib.Path(tempfile.mkdtemp()) / "phase"
start = time.perf_counter()
results = jm.sweep(
    problem, pair, schedules, w0, t1=300.0, truth=x_star, out=store, progress=False
)
print(f"{side * side} flows in {time.perf_counter() - start:.1f} s")
results

# %% [markdown]
# ## The dataset
#
# One row per configuration, its parameters as coordinates: select, group and reduce as
# with any xarray dataset. `recovery_error` is $|x(T) - x^*|$;
# `predicted_recovery_error` the same for `jm.implicit_bias`'s limit.

# %%
best = results.isel(config=int(np.argmin(results.recovery_error.values)))
print("best schedule: alpha =", float(best.alpha), ", t_off =", float(best.t_off))
print("its recovery error:", float(best.recovery_error))
print("statuses:", {jm.Status(int(s)).name for s in np.unique(results.status.values)})
# Where a flow has not reached its limit by t1 (`converged` false), the simulation
# and the prediction differ; elsewhere they agree to the solver's tolerance.
done = results.converged.values
gap = np.abs(results.recovery_error - results.predicted_recovery_error).values
print(f"converged by t1: {done.sum()} of {done.size}")
if done.any():
    print("largest |simulated - predicted| where converged:", float(gap[done].max()))

# %% [markdown]
# ## Resume
#
# The store is the sweep's memory: calling again with `resume=True` reads the finished
# chunks instead of recomputing them (a changed problem or grid is refused).

# %%
start = time.perf_counter()
again = jm.sweep(
    problem,
    pair,
    schedules,
    w0,
    t1=300.0,
    truth=x_star,
    out=store,
    resume=True,
    progress=False,
)
print(
    f"resumed in {time.perf_counter() - start:.2f} s; identical:",
    bool((again.recovery_error == results.recovery_error).all()),
)

# %% [markdown]
# ## The phase diagram
#
# Simulated and predicted side by side, with the predicted boundary drawn on both.

# %%
figure = jm.phase_diagram(results)  # a matplotlib figure; path=... saves it
