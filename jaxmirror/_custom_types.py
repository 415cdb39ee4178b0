"""Shared jaxtyping aliases.

Dimension names used throughout jaxmirror:

- ``n``: dimension of the model point ``x = g(w)``;
- ``d``: number of measurements (rows of ``Z``);
- ``times``: number of saved times;
- ``jumps``: number of discontinuities of a schedule.
"""

from typing import TypeAlias

from jaxtyping import Array, ArrayLike, Float, PyTree


RealScalarLike: TypeAlias = float | int | ArrayLike
Scalar: TypeAlias = Float[Array, ""]
Point: TypeAlias = Float[Array, " n"]
Params: TypeAlias = PyTree[Float[Array, "..."]]
