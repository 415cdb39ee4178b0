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
# # The three effects of weight decay on the implicit bias
#
# Gradient flow on $x = g(w)$ with weight decay $\alpha_t h(w)$ is a mirror flow
# $\frac{d}{dt}\nabla R_{a_t}(x_t) = -\nabla f(x_t)$ whose Legendre function $R_a$ moves
# with the accumulated weight decay $a_t = -\int_0^t \alpha_s\,ds$. Where the flow ends
# is the minimiser of $R_{a_\infty}(x) - \langle\nabla R_0(x_0), x\rangle$ among the
# interpolants. Moving $R_a$ has three effects, one section each:
#
# 1. **positional bias**: the centre of the bias moves;
# 2. **type of bias**: the shape of $R_a$ changes (from $L_2$-like to $L_1$-like);
# 3. **range shrinking**: the range of the mirror coordinate shrinks.
#
# The conventions (signs, the factor 1/2 in $h$) are on the documentation's
# *Concepts* page.

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
n, d = {"tiny": (20, 8), "small": (100, 40), "full": (400, 160)}[scale]
print("backend:", jax.default_backend(), "| scale:", scale, f"| n = {n}, d = {d}")

problem, x_star = jm.datasets.sparse_regression(n=n, d=d, sparsity=3, seed=0)
a_values = jnp.linspace(0.0, -4.0, 17)


def switch_off(a_inf, alpha=0.1):
    """Weight decay alpha until the accumulated decay reaches a_inf, then none."""
    return jm.SwitchOff(alpha=alpha, t_off=-a_inf / alpha)


# %% [markdown]
# ## 1. Positional bias: the centre moves towards 0
#
# For the Hadamard pair $x = m\odot w$ started at $x_0 \ne 0$, the centre of the bias
# $\hat x(a) = (\nabla R_a)^{-1}(\nabla R_0(x_0))$ is $x_0e^{2a}$
# (`jm.positional_bias_centre` computes it from any Legendre function). So switching
# weight decay off is *not* a smaller initialisation from $x_0$: it is a smaller
# initialisation with the centre moved to $x_0 e^{2a_\infty}$. Both claims are
# checked below on `jm.implicit_bias`, and the prediction on the flow itself.

# %%
pair = jm.Hadamard()
x0 = 0.5 * jax.random.normal(jax.random.key(1), (n,))
w0 = pair.init(x0, scale=1.0)
legendre = pair.legendre(w0)
centres = jax.vmap(lambda a: jm.positional_bias_centre(legendre, x0, a))(a_values)
closed_form = x0 * jnp.exp(2 * a_values[:, None])
print("max |centre - x0 e^{2a}|:", float(jnp.max(jnp.abs(centres - closed_form))))

a_inf = -2.0
switched = jm.implicit_bias(problem, pair, switch_off(a_inf), w0)
smaller = jnp.exp(a_inf)  # the equivalent initial scale, s e^{a}
never = jm.Constant(0.0)
moved = jm.implicit_bias(
    problem, pair, never, pair.init(x0 * jnp.exp(2 * a_inf), scale=smaller)
)
unmoved = jm.implicit_bias(problem, pair, never, pair.init(x0, scale=smaller))
print(
    "switch-off vs smaller scale, centre moved:", float(jnp.max(abs(switched - moved)))
)
print(
    "switch-off vs smaller scale, from x0:     ",
    float(jnp.max(abs(switched - unmoved))),
)

flow = jm.solve(problem, pair, switch_off(a_inf), w0, t1=3000.0, rtol=1e-10, atol=1e-12)
print("flow's end vs the prediction:", float(jnp.max(jnp.abs(flow.x_final - switched))))

fig, ax = plt.subplots(figsize=(5, 3.2))
for i in range(3):
    ax.plot(a_values, centres[:, i], "o", ms=4, label=f"coordinate {i}")
    ax.plot(a_values, closed_form[:, i], "k-", lw=0.8)
ax.set(xlabel="$a$", ylabel=r"$\hat x(a)_i$", title="the centre moves as $x_0e^{2a}$")
ax.legend()
plt.show()

# %% [markdown]
# ## 2. Type of bias: from $L_2$ to $L_1$
#
# Around its centre, $R_a$ behaves like a weighted $L_2$ norm where $|x| \ll |u_a|$ and
# like $L_1$ where $|x| \gg |u_a|$; weight decay shrinks $u_a$. `jm.type_of_bias`
# measures the effective exponent $p$ of $R_a$ at the sparse truth (2: $L_2$-like,
# 1: $L_1$-like). The limit after a switch-off follows: the recovery error falls from
# the minimum-$L_2$ interpolant's towards zero as $a_\infty$ decreases, while
# weight decay kept on gives the lasso instead.

# %%
w_zero = pair.init(jnp.zeros(n), scale=1.0)
at_zero = pair.legendre(w_zero)
p = jax.vmap(lambda a: jm.type_of_bias(at_zero, jnp.zeros(n), x_star, a))(a_values)
limits = jax.vmap(lambda a: jm.implicit_bias(problem, pair, switch_off(a), w_zero))(
    a_values
)
errors = jnp.linalg.norm(limits - x_star, axis=1)
minimum_l2 = jnp.linalg.lstsq(problem.Z, problem.y)[0]
always = jm.implicit_bias(problem, pair, jm.Constant(0.01), w_zero)
print("p at a = 0, -2, -4:", [round(float(p[i]), 3) for i in (0, 8, 16)])
print("error: minimum L2", float(jnp.linalg.norm(minimum_l2 - x_star)))
print(
    "error: weight decay always (alpha 0.01)", float(jnp.linalg.norm(always - x_star))
)
print("error: switched off at a = -4", float(errors[-1]))

fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
left.plot(a_values, p, "o-")
left.set(xlabel=r"$a$", ylabel="effective exponent $p$", title="$R_a$ at $x^*$")
right.semilogy(a_values, errors, "o-", label="switch-off at $a_\\infty$")
right.axhline(
    float(jnp.linalg.norm(minimum_l2 - x_star)),
    color="k",
    ls=":",
    label="minimum $L_2$",
)
right.axhline(
    float(jnp.linalg.norm(always - x_star)), color="C3", ls="--", label="always (lasso)"
)
right.set(xlabel=r"$a_\infty$", ylabel=r"$|x_\infty - x^*|$", title="recovery")
right.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Range shrinking: the mirror coordinate's range
#
# For $x = \log u - \log v$ with $h = \tfrac12(|u|^2 + |v|^2)$ (`jm.LogDifference`),
# $s = u^2 + v^2$ decays exactly as $s_0e^{2a_t}$, so the natural mirror coordinate
# $u^2/2$ lives in $(0, s_0e^{2a_t}/2)$: an interval that shrinks with weight decay.
# (This is this project's derivation of a shrinking range, not the paper's example.)
# What it changes: the clock (the flow runs faster), not where it ends.

# %%
log_pair = jm.LogDifference()
w_log = log_pair.init(0.3 * jax.random.normal(jax.random.key(2), (n,)), 1.0)
ts = jnp.linspace(0.0, 20.0, 41)
schedules = {
    "none": jm.Constant(0.0),
    "constant": jm.Constant(0.1),
    "switch-off": jm.SwitchOff(0.1, 8.0),
}
finals = {}
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
for name, schedule in schedules.items():
    sol = jm.solve(
        problem,
        log_pair,
        schedule,
        w_log,
        20.0,
        formulation="parameter",
        saveat=diffrax.SaveAt(ts=ts),
        rtol=1e-10,
        atol=1e-12,
    )
    u, v = sol.ws
    width = 0.5 * jnp.mean(u**2 + v**2, axis=1)
    predicted = jax.vmap(lambda a: jnp.mean(log_pair.range_width(w_log, a)))(
        jax.vmap(schedule.a)(ts)
    )
    print(
        f"{name:10s} width vs s0 e^(2a)/2: {float(jnp.max(abs(width / predicted - 1))):.1e}"
    )
    left.plot(ts, width, label=name)
    residual = jnp.linalg.norm(sol.xs @ problem.Z.T - problem.y, axis=1)
    right.semilogy(ts, residual, label=name)
    finals[name] = sol.x_final
left.set(xlabel="t", ylabel="mean range of $u^2/2$", title="the range shrinks")
right.set(xlabel="t", ylabel="$|Zx_t - y|$", title="and the flow runs faster")
left.legend()
plt.tight_layout()
plt.show()

# One limit for every schedule (weight decay only runs the clock): how far each flow
# is from it at t = 20.
limit = jm.implicit_bias(problem, log_pair, jm.Constant(0.0), w_log)
for name, x in finals.items():
    print(f"{name:10s} |x(20) - limit| = {float(jnp.max(jnp.abs(x - limit))):.1e}")
