r"""Default tolerances by precision.

A tolerance means something only above the roundoff of the quantity it controls. The
Legendre formulations read $x = (\nabla R_a)^{-1}(\theta)$ through an exponential
(e.g. $c_a\sinh(k\theta)$ for the hyperbolic entropy), which turns an absolute error
$\epsilon|\theta|$ of $\theta$ into a relative error $k|\theta|\epsilon$ of $x$: in
float32 ($\epsilon = 1.2\cdot10^{-7}$) an error estimate near `rtol = 1e-6` is mostly
roundoff, and the step-size controller takes 2x (mean) to 7.5x (max) more steps
chasing it (`benchmarks/RESULTS.md`, "float32 against float64").

So the defaults are never below 100 and 1 times the machine epsilon of the state's
dtype: in float64 they are the float64 defaults of `jm.solve` (1e-8, 1e-10) and
`jm.sweep` (1e-6, 1e-9) unchanged; in float32 both become $100\epsilon \approx
1.2\cdot10^{-5}$ and $\epsilon \approx 1.2\cdot10^{-7}$.
"""

import jax.numpy as jnp


ROUNDOFF_MARGIN = 100
"""The default `rtol` is at least this many machine epsilons of the state's dtype."""


def roundoff_rtol(dtype) -> float:
    r"""The smallest default `rtol` for states of `dtype`: $100\epsilon$."""
    return ROUNDOFF_MARGIN * float(jnp.finfo(dtype).eps)


def precision_tolerances(dtype, rtol, atol, float64_defaults) -> tuple:
    r"""`rtol` and `atol`, where `None`, replaced by the default for `dtype`.

    The default is `float64_defaults` (the float64 pair), raised to at least
    $(100\epsilon, \epsilon)$ of `dtype`. Tolerances given explicitly are returned
    unchanged (they are checked by `solver_options`).
    """
    eps = float(jnp.finfo(dtype).eps)
    default_rtol, default_atol = float64_defaults
    if rtol is None:
        rtol = max(default_rtol, roundoff_rtol(dtype))
    if atol is None:
        atol = max(default_atol, eps)
    return rtol, atol


MAX_RTOL = 0.1
"""The loosest `rtol` a flow accepts: 10% error per step already makes the
`converged` flag's margin (10 tolerances) wider than the point itself."""
MAX_ATOL = 1e-2
"""The loosest `atol` a flow accepts (measured: at rtol = atol = 10 a solve reported
`converged` 4.8e-3 from its limit)."""


AMPLIFICATION = 1e3
"""How much more error in x than the tolerances allow a formulation may carry: a
final state beyond it reports `Status.PRECISION_LOST` (`_convergence.precise`), and
`formulation="auto"` avoids a formulation expected beyond it (`dual_amplification`
of closed-form pairs)."""
