r"""The four equivalent vector fields of the regularized gradient flow.

With $a_t = -\int_0^t \alpha_s ds$ and $\theta = \nabla R_a(x)$:

- parameter: $\dot w = -J_g(w)^\top \nabla f(g(w)) - \alpha_t \nabla h(w)$ (any pair);
- mirror: $\dot x = -[\nabla^2 R_{a_t}(x)]^{-1}\big(\nabla f(x) - \alpha_t\,
  \partial_a \nabla R_{a}(x)|_{a=a_t}\big)$; the term $-\partial_a\nabla R_a$ is
  $\nabla_x y_a(x)$ with $y = h(w)$ written in $x$ (THEORY.md section 2);
- dual: $\dot\theta = -\nabla f\big((\nabla R_{a_t})^{-1}(\theta)\big)$, free of Hessians;
- rowspace: for $f(x) = \phi(Dx)$ (`AbstractLinearProblem`, D of shape d x n),
  $\theta_t = \theta_0 + D^\top\mu_t$ with $\mu \in \mathbb R^d$,
  $\dot\mu = -\nabla\phi(D x_t)$ and $x_t = (\nabla R_{a_t})^{-1}(\theta_0 + D^\top\mu_t)$:
  the dual flow restricted to the row space of D, with d instead of n coordinates.

Each has the diffrax signature `(t, state, args)`; `args` carries the (traced) problem,
pair or Legendre function, and schedule, so a sweep never recompiles.
"""

import jax
import jax.numpy as jnp


def parameter_field(t, w, args):
    problem, pair, schedule = args
    x, pullback = jax.vjp(pair.g, w)
    (grad_fit,) = pullback(problem.grad(x))
    grad_reg = jax.grad(pair.h)(w)
    alpha = schedule(t)
    return jax.tree_util.tree_map(lambda gf, gh: -(gf + alpha * gh), grad_fit, grad_reg)


def mirror_field(t, x, args):
    problem, legendre, schedule = args
    a = schedule.a(t)
    _, dtheta_da = jax.jvp(lambda a_: legendre.grad(x, a_), (a,), (jnp.ones_like(a),))
    force = problem.grad(x) - schedule(t) * dtheta_da
    return -force / legendre.hessian_diag(x, a)


def dual_field(t, theta, args):
    problem, legendre, schedule = args
    return -problem.grad(legendre.grad_inverse(theta, schedule.a(t)))


def rowspace_point(mu, t, args):
    r"""$x = (\nabla R_{a_t})^{-1}(\theta_0 + D^\top\mu)$."""
    problem, legendre, schedule, theta0 = args
    return legendre.grad_inverse(theta0 + mu @ problem.design(), schedule.a(t))


def rowspace_field(t, mu, args):
    problem = args[0]
    return -problem.prediction_grad(problem.predict(rowspace_point(mu, t, args)))
