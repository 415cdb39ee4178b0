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
# # Learning a weight-decay schedule by gradient
#
# Where training ends is a differentiable function of the schedule: `jm.implicit_bias`
# is differentiated by the implicit function theorem, so a validation loss of the
# final point can be minimised over the schedule itself. `jm.optimize_schedule` does
# this with Optax, on a `jm.PiecewiseSwitchOff` schedule (non-negative pieces, then
# no weight decay: every parameter value is a valid schedule).

# %%
import jax


jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxmirror as jm
from jaxmirror.experiments import default_scale


jm.enable_compilation_cache()
scale = default_scale()
n, d, steps = {"tiny": (30, 12, 8), "small": (100, 40, 60), "full": (400, 160, 200)}[
    scale
]
print("backend:", jax.default_backend(), "| scale:", scale, f"| {steps} steps")

# %% [markdown]
# ## A validation loss of where training ends
#
# The truth is sparse; the validation loss is the fit on fresh measurements of the
# same truth, a held-out error the training data never see.

# %%
problem, x_star = jm.datasets.sparse_regression(n=n, d=d, sparsity=3, seed=0)
pair = jm.Hadamard()
w0 = pair.init(jnp.zeros(n), scale=1.0)
Z_val = jax.random.normal(jax.random.PRNGKey(1), (2 * d, n)) / jnp.sqrt(d)


def validation_loss(x):
    return jnp.mean((Z_val @ (x - x_star)) ** 2)


start = jm.PiecewiseSwitchOff.from_values(
    jnp.array([10.0, 20.0, 30.0]), jnp.array([0.01, 0.01, 0.01])
)
print("start: a_inf =", float(start.a_inf()))
print(
    "validation loss at the start:",
    float(validation_loss(jm.implicit_bias(problem, pair, start, w0))),
)

# %% [markdown]
# ## Gradient steps on the schedule
#
# Each step is one dual Newton solve and its implicit gradient: no flow is integrated.

# %%
best = jm.optimize_schedule(problem, pair, w0, validation_loss, start, steps=steps)
print(f"{best.num_solves} solves in {best.seconds:.1f} s")
print("best: a_inf =", float(best.schedule.a_inf()))
print("validation loss:", float(np.min(best.history)))

# %% [markdown]
# The learnt schedule decays more strongly before it switches off ($a_\infty$ from
# -0.3 to about -5 at the default size): it moves the implicit bias towards $L_1$,
# which suits the sparse truth.

# %%
ts = jnp.linspace(0.0, 35.0, 351)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5), constrained_layout=True)
ax1.semilogy(np.asarray(best.history))
ax1.set_xlabel("optimisation step")
ax1.set_ylabel("validation loss")
ax2.plot(ts, jax.vmap(start)(ts), label="start")
ax2.plot(ts, jax.vmap(best.schedule)(ts), label="learnt")
ax2.set_xlabel("t")
ax2.set_ylabel("alpha_t")
ax2.legend()
plt.show()

# %%
x_end = jm.implicit_bias(problem, pair, best.schedule, w0)
print("recovery error |x_end - x*|:", float(jnp.linalg.norm(x_end - x_star)))
