from ._base import (
    AbstractClosedFormPair as AbstractClosedFormPair,
    AbstractMatrixPair as AbstractMatrixPair,
    AbstractMirrorDescentPair as AbstractMirrorDescentPair,
    AbstractPair as AbstractPair,
    AbstractPenalisedPair as AbstractPenalisedPair,
    require as require,
)
from ._diff_squares import DiffSquares as DiffSquares
from ._hadamard import Hadamard as Hadamard
from ._matrix import (
    CommutingReduction as CommutingReduction,
    MatrixFactorization as MatrixFactorization,
    SymmetricFactorization as SymmetricFactorization,
)
from ._square import Square as Square
