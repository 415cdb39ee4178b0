from ._base import (
    AbstractClosedFormPair as AbstractClosedFormPair,
    AbstractPair as AbstractPair,
)
from ._diff_squares import DiffSquares as DiffSquares
from ._hadamard import Hadamard as Hadamard
from ._square import Square as Square
