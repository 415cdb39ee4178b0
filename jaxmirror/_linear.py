"""The one linear solve the limit computations share."""

import jax.numpy as jnp


def ridged_solve(matrix, rhs):
    """Solve with a positive semidefinite `matrix` plus a relative ridge of 1e-13: it
    keeps the solution finite when the matrix is numerically singular (tiny scales:
    most coordinates have dx/dtheta ~ 1e-60) and changes a well-conditioned solve
    only at rounding level."""
    ridge = 1e-13 * jnp.trace(matrix) / matrix.shape[0]
    eye = jnp.eye(matrix.shape[0], dtype=matrix.dtype)
    return jnp.linalg.solve(matrix + ridge * eye, rhs)
