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
# # jaxmirror quick start
#
# Weight decay reshapes the implicit bias of gradient flow. Here: the Hadamard pair
# $x = m \odot w$ on a sparse-recovery problem, with weight decay that switches off.

# %%
import jax


jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp

import jaxmirror as jm


jm.enable_compilation_cache()  # keep compiled programs across sessions
print("backend:", jax.default_backend())

# %%
problem, x_star = jm.datasets.sparse_regression(n=100, d=40, sparsity=5, seed=0)
pair = jm.Hadamard()
w0 = pair.init(jnp.zeros(100), scale=1.0)  # m0 = 1, w0 = 0
schedule = jm.SwitchOff(alpha=0.1, t_off=50.0)

# %% [markdown]
# Where does training end? `implicit_bias` answers without integrating the flow;
# `solve` integrates it.

# %%
x_inf = jm.implicit_bias(problem, pair, schedule, w0)
sol = jm.solve(problem, pair, schedule, w0, t1=30_000.0, formulation="mirror")
print("status:", jm.Status(int(sol.status)).name)
print("|x_inf - x*| =", float(jnp.linalg.norm(x_inf - x_star)))
print("|x(T) - x_inf| =", float(jnp.max(jnp.abs(sol.x_final - x_inf))))

# %% [markdown]
# The recovery error as a function of the total weight decay $a_\infty$: one vmapped
# call over a batch of schedules.

# %%
a_inf = jnp.linspace(0.0, -6.0, 25)
batch = jm.SwitchOff(alpha=-a_inf / 50.0, t_off=jnp.full(25, 50.0))
limits = jax.vmap(lambda s: jm.implicit_bias(problem, pair, s, w0))(batch)
errors = jnp.linalg.norm(limits - x_star, axis=1)

import matplotlib.pyplot as plt


plt.semilogy(a_inf, errors, "o-")
plt.xlabel(r"$a_\infty = -\int_0^\infty \alpha_t dt$")
plt.ylabel(r"$|x_\infty - x^*|$")
plt.title("switching weight decay off recovers the sparse truth")
plt.show()
