r"""Converters between initialisation conventions of the literature and jaxmirror's.

jaxmirror's convention: `Hadamard().init(x0, scale)` sets $m_0^2 - w_0^2 = \text{scale}^2$
(at $x_0 = 0$: $m_0 = \text{scale}$, $w_0 = 0$); `DiffSquares().init(x0, scale)` sets
$u_0 v_0 = \text{scale}^2$ (at $x_0 = 0$: $u_0 = v_0 = \text{scale}$).

- Woodworth et al. (2020), "Kernel and rich regimes in overparametrized models":
  $\beta = w_+^2 - w_-^2$, $w_+ = w_- = \alpha$, limit $\arg\min Q_\alpha$ with
  $Q_\alpha(\beta) = \alpha^2\sum_i q(\beta_i/\alpha^2)$,
  $q(z) = 2 - \sqrt{4+z^2} + z\operatorname{arcsinh}(z/2)$. This is `DiffSquares` with
  scale $= \alpha$; our $R_0 = Q_\alpha / 4 + $ const.
- Pesme et al. (2021), "Implicit bias of SGD for diagonal linear networks":
  $\beta = u \odot v$, $u_0 = \sqrt2\alpha$, $v_0 = 0$, potential
  $\psi_\alpha(\beta) = \tfrac12\sum_i\big[\beta_i\operatorname{arcsinh}(\beta_i/\alpha^2)
  - \sqrt{\beta_i^2 + \alpha^4} + \alpha^2\big]$. This is `Hadamard` with
  scale $= \sqrt2\alpha$; our $R_0 = \psi_\alpha + $ const.
- Woodworth et al. (2020), depth D: $\beta = w_+^D - w_-^D$, $w_\pm = \alpha$, limit
  $\arg\min Q^D_\alpha$ with $\nabla Q^D_\alpha(\beta) = h_D^{-1}(\beta/\alpha^D)$,
  $h_D(s) = (1 - s)^{-D/(D-2)} - (1 + s)^{-D/(D-2)}$. This is `PowerDifference(D)` with
  scale $= \alpha$ and no weight decay: its mirror coordinate is
  $\theta = s / (D(D-2)\alpha^{D-2})$.
- The paper (Jacobs, Zhou & Burkholz, "Mirror, Mirror of the Flow: How Does
  Regularization Shape Implicit Bias?", ICML 2025, arXiv:2504.12883) writes the
  regularizer of $m \odot w$ as $m^2 + w^2$, without our $\tfrac12$: its weight
  decay $\alpha_{\text{paper}}$ is our $\alpha / 2$ (`to_paper_alpha`,
  `from_paper_alpha`), and so its Legendre time $a^{\text{paper}}_t =
  -\int_0^t\alpha_{\text{paper}}$ is our $a_t / 2$ (`to_paper_a`, `from_paper_a`):
  for `Hadamard`, $m_t^2 - w_t^2 = \text{scale}^2 e^{2a_t} = \text{scale}^2
  e^{4a^{\text{paper}}_t}$. The same holds for every pair whose $h$ we write as
  $\tfrac12|w|^2$.

Induced penalties $\rho(x) = \min\{h(w) : g(w) = x\}$, the constant-weight-decay
limit being $\arg\min f + \alpha\rho$ where it is convex: `Hadamard` $|x|_1$,
`DiffSquares` $\tfrac12|x|_1$, `Square` $\tfrac12|x|_1$ on $x \ge 0$, matched
`PowerDifference(L)` $|x|_1/L$, `PowerDifference(L, "l2")` $\tfrac12\sum|x_i|^{2/L}$
(not convex for L > 2), `LogDifference` 0, `MatrixFactorization` $|X|_*$,
`SymmetricFactorization` $\operatorname{tr} X$ on PSD matrices.
"""

import jax.numpy as jnp
from jaxtyping import ArrayLike

from ._pairs import DiffSquares, Hadamard


def from_woodworth(alpha: ArrayLike) -> tuple[DiffSquares, ArrayLike]:
    """The pair and jaxmirror scale matching Woodworth et al.'s initialisation `alpha`."""
    return DiffSquares(), jnp.asarray(alpha)


def from_pesme(alpha: ArrayLike) -> tuple[Hadamard, ArrayLike]:
    """The pair and jaxmirror scale matching Pesme et al.'s initialisation `alpha`."""
    return Hadamard(), jnp.sqrt(2.0) * jnp.asarray(alpha)


def to_paper_alpha(alpha: ArrayLike):
    r"""The paper's weight decay for jaxmirror's `alpha`: $\alpha/2$ (the paper's
    regularizer is $m^2 + w^2$, ours $\tfrac12(m^2 + w^2)$)."""
    return jnp.asarray(alpha) / 2.0


def from_paper_alpha(alpha_paper: ArrayLike):
    r"""jaxmirror's weight decay for the paper's $\alpha_{\text{paper}}$: twice it."""
    return 2.0 * jnp.asarray(alpha_paper)


def to_paper_a(a: ArrayLike):
    r"""The paper's Legendre time for jaxmirror's $a_t$: $a_t/2$ (it integrates the
    paper's weight decay, `to_paper_alpha`)."""
    return jnp.asarray(a) / 2.0


def from_paper_a(a_paper: ArrayLike):
    r"""jaxmirror's Legendre time $a_t$ for the paper's: twice it."""
    return 2.0 * jnp.asarray(a_paper)


def woodworth_potential(beta: ArrayLike, alpha: ArrayLike):
    r"""Woodworth et al.'s $Q_\alpha(\beta)$, as published (for cross-checks)."""
    z = jnp.asarray(beta) / alpha**2
    q = 2.0 - jnp.sqrt(4.0 + z**2) + z * jnp.arcsinh(z / 2.0)
    return jnp.sum(alpha**2 * q)


def pesme_potential(beta: ArrayLike, alpha: ArrayLike):
    r"""Pesme et al.'s $\psi_\alpha(\beta)$, as published (for cross-checks)."""
    beta = jnp.asarray(beta)
    return 0.5 * jnp.sum(
        beta * jnp.arcsinh(beta / alpha**2) - jnp.sqrt(beta**2 + alpha**4) + alpha**2
    )
