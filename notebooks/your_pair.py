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
# # Your own pair in ten lines
#
# jaxmirror's built-in pairs have Legendre functions derived by hand. A pair of your
# own needs only `g`, `h` and `init`: if its gradient fields close,
# $[\nabla g_i, \nabla h] = c\,\nabla g_i$ with one constant $c$, the time-varying
# Legendre function $R_a$ is computed from the flows of the two fields (docs/theory.md,
# section 5b), and jaxmirror predicts where training ends.
#
# Our example: a three-factor diagonal network $x = u \odot v \odot z$ with weight decay,
# initialised unbalanced. No closed form is known for it.

# %%
import jax


jax.config.update("jax_enable_x64", True)
import diffrax
import jax.numpy as jnp
import matplotlib.pyplot as plt

import jaxmirror as jm
from jaxmirror.experiments import default_scale


jm.enable_compilation_cache()
scale = default_scale()  # "full" on an accelerator, "small" on a CPU, "tiny" in tests
n, d = {"tiny": (12, 6), "small": (40, 16), "full": (400, 160)}[scale]
print("backend:", jax.default_backend(), "| scale:", scale, f"| (d, n) = ({d}, {n})")


# %%
class ThreeFactor(jm.AbstractSeparablePair):
    def g(self, w):
        u, v, z = w
        return u * v * z

    def h(self, w):
        return 0.5 * sum(jnp.sum(leaf**2) for leaf in w)

    def init(self, x0=None, scale=1.0, *, key=None):
        ones = jnp.ones_like(x0)  # unbalanced: |u0| = 2 |v0|, x0 = u0 v0 z0
        return (2 * scale * ones, scale * ones, x0 / (2 * scale**2))


# %% [markdown]
# ## Do the brackets close?
#
# `brackets(w0)` reports $c$ in $[\nabla g_i, \nabla h] = c\,\nabla g_i$ and the part of
# the bracket that is not a multiple of $\nabla g_i$, at `w0` and after weight decay has
# acted for a while. Here $c = -1$: the mirror flow runs on the clock $e^{\kappa a}$,
# $\kappa = -c = 1$.

# %%
problem, x_star = jm.datasets.sparse_regression(n=n, d=d, sparsity=3, seed=1)
pair = ThreeFactor()
w0 = pair.init(jnp.zeros(n), scale=0.5)
report = pair.brackets(w0)
print("kappa =", report.kappa, "| largest residual:", float(report.residual.max()))

# %% [markdown]
# ## Where does training end?
#
# `implicit_bias` predicts the limit without running the flow; `solve` runs it (in the
# parameter formulation, with an implicit solver: the last approach to the limit is
# slow and stiff). They agree to the flow's distance from its limit.

# %%
schedule = jm.SwitchOff(alpha=0.1, t_off=20.0)
x_inf = jm.implicit_bias(problem, pair, schedule, w0)
sol = jm.solve(problem, pair, schedule, w0, t1=100_000.0, solver=diffrax.Kvaerno5())
print("status:", jm.Status(int(sol.status)).name)
print("|x(T) - predicted| =", float(jnp.max(jnp.abs(sol.x_final - x_inf))))
print(
    "the flow's own estimate of its distance to the limit:",
    float(sol.distance_to_limit),
)
print("recovery error |x_inf - x*| =", float(jnp.linalg.norm(x_inf - x_star)))

# %% [markdown]
# ## How weight decay changes $R_a$
#
# One coordinate of $R_a$, for several Legendre times $a = -\int\alpha$: weight decay
# ($a$ more negative) sharpens the function around its centre, moving the bias from
# $L_2$ towards $L_1$, as for the hand-derived pairs. The prediction is differentiable:
# its derivative in the amount of weight decay is below.

# %%
legendre = pair.legendre(w0)
grid = jnp.linspace(-1.0, 1.0, 81)
fig, ax = plt.subplots(figsize=(6, 4))
for a in (0.0, -0.5, -1.0, -2.0):
    # R_a of the first coordinate: the others held at their starting point 0.
    values = jax.vmap(lambda t, a=a: legendre.value(jnp.zeros(n).at[0].set(t), a))(grid)
    ax.plot(grid, values - values.min(), label=f"a = {a}")
ax.set_xlabel("$x_1$")
ax.set_ylabel("$R_a(x) - \\min$")
ax.set_title("three-factor network: $R_a$ computed from its flows")
ax.legend()
plt.show()


# %%
def recovery_error(alpha):
    limit = jm.implicit_bias(problem, pair, jm.SwitchOff(alpha, 20.0), w0)
    return jnp.linalg.norm(limit - x_star)


print("d error / d alpha at alpha = 0.1:", float(jax.grad(recovery_error)(0.1)))

# %% [markdown]
# ## A pair whose brackets do not close is refused
#
# For $x = uv + u^3/3$ with weight decay the bracket has a part that is not a
# multiple of $\nabla g_i$: no mirror flow, and jaxmirror says so, naming the figures.
# Simulate such a pair with `jm.solve(..., formulation="parameter")`.


# %%
class NotClosing(jm.AbstractSeparablePair):
    def g(self, w):
        u, v = w
        return u * v + u**3 / 3

    def h(self, w):
        u, v = w
        return 0.5 * (jnp.sum(u**2) + jnp.sum(v**2))

    def init(self, x0=None, scale=1.0, *, key=None):
        return jm.Hadamard().init(x0, scale)


try:
    jm.implicit_bias(problem, NotClosing(), schedule, NotClosing().init(jnp.zeros(n)))
except ValueError as error:
    print(error)
