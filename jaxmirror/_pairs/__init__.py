from ._base import (
    AbstractClockOnlyPair as AbstractClockOnlyPair,
    AbstractClosedFormPair as AbstractClosedFormPair,
    AbstractMatrixPair as AbstractMatrixPair,
    AbstractMirrorDescentPair as AbstractMirrorDescentPair,
    AbstractPair as AbstractPair,
    AbstractPenalisedPair as AbstractPenalisedPair,
    require as require,
)
from ._diff_squares import DiffSquares as DiffSquares
from ._hadamard import Hadamard as Hadamard
from ._log_difference import LogDifference as LogDifference
from ._matrix import (
    CommutingReduction as CommutingReduction,
    MatrixFactorization as MatrixFactorization,
    SymmetricFactorization as SymmetricFactorization,
)
from ._power_difference import PowerDifference as PowerDifference
from ._separable import (
    AbstractSeparablePair as AbstractSeparablePair,
    BracketReport as BracketReport,
)
from ._square import Square as Square


PAIRS = {
    "hadamard": Hadamard,
    "diff_squares": DiffSquares,
    "square": Square,
    "power_difference": PowerDifference,
    "log_difference": LogDifference,
    "matrix_factorization": MatrixFactorization,
    "symmetric_factorization": SymmetricFactorization,
}
"""Every built-in pair by the name a configuration file gives it."""
