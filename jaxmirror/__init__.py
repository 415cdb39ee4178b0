"""jaxmirror: how regularization shapes implicit bias, as a differentiable JAX simulator."""

from . import conventions as conventions, datasets as datasets, models as models
from ._cache import enable_compilation_cache as enable_compilation_cache
from ._commute import lie_brackets as lie_brackets, LieBrackets as LieBrackets
from ._compare import (
    compare_to_flow as compare_to_flow,
    FlowComparison as FlowComparison,
)
from ._discrete import (
    make_optimizer as make_optimizer,
    train as train,
    TrainResult as TrainResult,
)
from ._discrete_bias import (
    discrete_implicit_bias as discrete_implicit_bias,
    mirror_descent_step as mirror_descent_step,
)
from ._effects import (
    positional_bias_centre as positional_bias_centre,
    type_of_bias as type_of_bias,
)
from ._flow_legendre import FlowLegendre as FlowLegendre
from ._formulations import (
    AbstractFormulation as AbstractFormulation,
    DualFormulation as DualFormulation,
    MirrorFormulation as MirrorFormulation,
    ParameterFormulation as ParameterFormulation,
    RowSpaceFormulation as RowSpaceFormulation,
)
from ._implicit_bias import implicit_bias as implicit_bias
from ._legendre import (
    AbstractLegendre as AbstractLegendre,
    HyperbolicEntropy as HyperbolicEntropy,
    LogisticEntropy as LogisticEntropy,
    PowerEntropy as PowerEntropy,
    ShiftedEntropy as ShiftedEntropy,
)
from ._optimize import (
    optimize_schedule as optimize_schedule,
    ScheduleOptimization as ScheduleOptimization,
)
from ._pairs import (
    AbstractClockOnlyPair as AbstractClockOnlyPair,
    AbstractClosedFormPair as AbstractClosedFormPair,
    AbstractMatrixPair as AbstractMatrixPair,
    AbstractMirrorDescentPair as AbstractMirrorDescentPair,
    AbstractPair as AbstractPair,
    AbstractPenalisedPair as AbstractPenalisedPair,
    AbstractSeparablePair as AbstractSeparablePair,
    BracketReport as BracketReport,
    CommutingReduction as CommutingReduction,
    DiffSquares as DiffSquares,
    Hadamard as Hadamard,
    LogDifference as LogDifference,
    MatrixFactorization as MatrixFactorization,
    PowerDifference as PowerDifference,
    Square as Square,
    SymmetricFactorization as SymmetricFactorization,
)
from ._phase import phase_diagram as phase_diagram
from ._problems import (
    AbstractLinearProblem as AbstractLinearProblem,
    AbstractProblem as AbstractProblem,
    LeastSquares as LeastSquares,
    Logistic as Logistic,
    MatrixSensing as MatrixSensing,
    Problem as Problem,
)
from ._schedules import (
    AbstractSchedule as AbstractSchedule,
    Constant as Constant,
    Cosine as Cosine,
    ExponentialDecay as ExponentialDecay,
    LinearDecay as LinearDecay,
    PiecewiseConstant as PiecewiseConstant,
    PiecewiseSwitchOff as PiecewiseSwitchOff,
    SwitchOff as SwitchOff,
)
from ._solve import Solution as Solution, solve as solve
from ._status import BiasStatus as BiasStatus, Status as Status
from ._sweep import grid as grid, sweep as sweep, use_all_cores as use_all_cores
from ._version import __version__ as __version__
