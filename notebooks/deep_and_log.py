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
# # Deep and logarithmic pairs
#
# Two reparameterizations beyond $x = m\odot w$, each with its own answer to "what
# does weight decay do to the implicit bias":
#
# - **deep**, $x = u^L - v^L$ (`jm.PowerDifference(L)`, a depth-$L$ diagonal
#   network). With weight decay ($h = \tfrac12|w|^2$, `regularizer="l2"`, what Optax
#   applies) or with the matched $h = \tfrac1L\sum|u_i|^L + |v_i|^L$
#   (`regularizer="matched"`), switching weight decay off moves the bias from $L_2$-like
#   towards $L_1$-like, faster for deeper pairs;
# - **logarithmic**, $x = \log u - \log v$ (`jm.LogDifference`): weight decay only runs
#   the clock. The limit is the same for every schedule; the flow gets there sooner.

# %%
import jax


jax.config.update("jax_enable_x64", True)
import diffrax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import scipy.optimize

import jaxmirror as jm
from jaxmirror.experiments import default_scale


jm.enable_compilation_cache()
scale = default_scale()  # "full" on an accelerator, "small" on a CPU, "tiny" in tests
n, d, points = {"tiny": (30, 12, 5), "small": (60, 24, 13), "full": (200, 80, 25)}[
    scale
]
print("backend:", jax.default_backend(), "| scale:", scale, f"| n = {n}, d = {d}")
problem, x_star = jm.datasets.sparse_regression(n=n, d=d, sparsity=3, seed=0)

# %% [markdown]
# ## Deep pairs: the type of bias against depth
#
# The limit after weight decay 0.1 until the accumulated decay reaches $a_\infty$,
# predicted by `jm.implicit_bias` (a closed-form mirror map for every L and both
# regularizers; `vmap` over the schedules), against the two interpolants it moves
# between: the minimum-$L_2$ one (least squares) and the minimum-$L_1$ one (basis
# pursuit, by scipy's linear programming).

# %%
a_values = jnp.linspace(0.0, -6.0, points)
schedules = jm.SwitchOff(  # a batch of schedules: a leading axis on each parameter
    alpha=jnp.where(a_values < 0, 0.1, 0.0), t_off=jnp.maximum(-a_values / 0.1, 1.0)
)

Z, y = np.asarray(problem.Z), np.asarray(problem.y)
minimum_l2 = np.linalg.lstsq(Z, y, rcond=None)[0]
bp = scipy.optimize.linprog(
    np.ones(2 * n), A_eq=np.hstack([Z, -Z]), b_eq=y, bounds=(0, None)
)
minimum_l1 = bp.x[:n] - bp.x[n:]

pairs = {"L = 2": jm.PowerDifference(2)}
for L in (3, 4):
    for regularizer in ("l2", "matched"):
        pairs[f"L = {L}, {regularizer}"] = jm.PowerDifference(L, regularizer)

fig, ax = plt.subplots(figsize=(6, 3.6))
for name, pair in pairs.items():
    w0 = pair.init(jnp.zeros(n), 1.0)
    limits = jax.vmap(lambda s: jm.implicit_bias(problem, pair, s, w0))(schedules)
    errors = jnp.linalg.norm(limits - x_star, axis=1)
    ax.semilogy(a_values, errors, "s--" if "matched" in name else "o-", label=name)
    print(
        f"{name:16s} error at a = 0: {float(errors[0]):.3f}, at a = -6: {float(errors[-1]):.2e}"
    )
ax.axhline(
    np.linalg.norm(minimum_l2 - x_star), color="k", ls=":", label="minimum $L_2$"
)
ax.axhline(
    max(np.linalg.norm(minimum_l1 - x_star), 1e-12),
    color="gray",
    ls="-.",
    label="minimum $L_1$",
)
ax.set(
    xlabel=r"$a_\infty$",
    ylabel=r"$|x_\infty - x^*|$",
    title="switch-off: from $L_2$-like towards $L_1$-like",
)
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The prediction against the flow itself, for $L = 3$ with weight decay (the pair
# whose Lie brackets do not vanish but are proportional, so that the flow is still a
# mirror flow, with a clock):

# %%
pair = pairs["L = 3, l2"]
w0 = pair.init(jnp.zeros(n), 1.0)
schedule = jm.SwitchOff(alpha=0.1, t_off=20.0)
flow = jm.solve(problem, pair, schedule, w0, t1=2000.0, rtol=1e-10, atol=1e-12)
predicted = jm.implicit_bias(problem, pair, schedule, w0)
print("status:", jm.Status(int(flow.status)).name, "| converged:", bool(flow.converged))
print("max |x(T) - predicted| =", float(jnp.max(jnp.abs(flow.x_final - predicted))))

# %% [markdown]
# ## The logarithmic pair: weight decay runs the clock
#
# For $x = \log u - \log v$, $\theta = \tfrac{s_0}{2}\sigma(2x)$ obeys
# $\dot\theta = -e^{-2a_t}\nabla f(x_t)$: the flow without weight decay, in the time
# $\tau(t) = \int_0^t e^{-2a_s}ds$. Under constant weight decay $\alpha$,
# $\tau(t) = (e^{2\alpha t} - 1)/(2\alpha)$. Check: the flow with weight decay at
# time $t$ against the flow without it at time $\tau(t)$.

# %%
log_pair = jm.LogDifference()
w_log = log_pair.init(0.3 * jax.random.normal(jax.random.key(2), (n,)), 1.0)
alpha, t1 = 0.1, 15.0
ts = jnp.linspace(0.0, t1, 31)
taus = (jnp.exp(2 * alpha * ts) - 1) / (2 * alpha)
options = dict(formulation="parameter", rtol=1e-10, atol=1e-12, max_steps=10**6)
decayed = jm.solve(
    problem,
    log_pair,
    jm.Constant(alpha),
    w_log,
    t1,
    saveat=diffrax.SaveAt(ts=ts),
    **options,
)
plain = jm.solve(
    problem,
    log_pair,
    jm.Constant(0.0),
    w_log,
    float(taus[-1]),
    saveat=diffrax.SaveAt(ts=taus),
    **options,
)
print(
    "max |x_decay(t) - x_plain(tau(t))| =",
    float(jnp.max(jnp.abs(decayed.xs - plain.xs))),
)

limit = jm.implicit_bias(problem, log_pair, jm.Constant(alpha), w_log)
print(
    "limit: |x_decay(15) - limit| =", float(jnp.max(jnp.abs(decayed.x_final - limit)))
)

plain_t = jm.solve(
    problem,
    log_pair,
    jm.Constant(0.0),
    w_log,
    t1,
    saveat=diffrax.SaveAt(ts=ts),
    **options,
)
fig, ax = plt.subplots(figsize=(5, 3.2))
for label, sol in (("no weight decay", plain_t), (f"weight decay {alpha}", decayed)):
    ax.semilogy(
        ts, jnp.linalg.norm(sol.xs @ problem.Z.T - problem.y, axis=1), label=label
    )
ax.set(xlabel="t", ylabel="$|Zx_t - y|$", title="the same path, a faster clock")
ax.legend()
plt.show()
