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

# %% [markdown]
# ## The trajectory
#
# `solve` saves the path at the times given by a `diffrax.SaveAt`. In the parameter
# formulation ($\dot w = -\nabla_w[f(g(w)) + \alpha_t h(w)]$) from the same start:
# the coordinates of the truth's support grow, the others stay small once weight decay
# has acted.

# %%
import diffrax
import numpy as np


ts = jnp.geomspace(0.1, 3000.0, 120)
path = jm.solve(
    problem,
    pair,
    schedule,
    w0,
    t1=3000.0,
    formulation="parameter",
    saveat=diffrax.SaveAt(ts=ts),
)
support = np.flatnonzero(np.asarray(x_star))
others = np.setdiff1d(np.arange(x_star.shape[0]), support)
plt.figure()
plt.semilogx(ts, path.xs[:, others], color="0.7", lw=0.6)
plt.semilogx(ts, path.xs[:, support], lw=1.5)
plt.axvline(schedule.t_off, color="k", ls=":", lw=1)
plt.xlabel("t")
plt.ylabel("$x_i(t)$")
plt.title("support (colour) and the rest (grey); dotted: weight decay off")
plt.show()

# %% [markdown]
# ## The Legendre function $R_a$
#
# Why the limit changes: the flow is a mirror flow whose Legendre function $R_a$
# depends on the accumulated weight decay $a$. For Hadamard, $R_a$ is quadratic
# ($L_2$-like) near 0 and grows like $|x|$ ($L_1$-like) beyond the scale $u_a =
# e^{2a}$; weight decay shrinks that scale. One coordinate, several $a$:

# %%
legendre = pair.legendre(pair.init(jnp.zeros(1), scale=1.0))
x = jnp.linspace(-3.0, 3.0, 301)[:, None]
plt.figure()
for a in (0.0, -1.0, -2.0, -3.0):
    values = jax.vmap(lambda xi: legendre.value(xi, a))(x)
    values = values - legendre.value(jnp.zeros(1), a)  # R_a(x) - R_a(0)
    plt.plot(x[:, 0], values / values[-1], label=f"a = {a:g}")
plt.plot(x[:, 0], jnp.abs(x[:, 0]) / 3.0, "k:", label="|x|, scaled")
plt.xlabel("x")
plt.ylabel("$(R_a(x) - R_a(0))$, scaled to 1 at x = 3")
plt.title("weight decay turns an $L_2$-like bias into an $L_1$-like one")
plt.legend()
plt.show()
