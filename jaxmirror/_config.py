"""Sweep configuration files (YAML), validated with messages that name the bad key.

Example (`jaxmirror sweep CONFIG.yaml --out DIR`):

```yaml
problem: {kind: sparse_regression, n: 100, d: 40, sparsity: 5, seed: 0}
# kinds: sparse_regression | commuting_sensing | gaussian_sensing (their parameters
# as in jm.datasets), or your own data: {kind: npz, path: data.npz} (Z, y, truth)
pair: hadamard                 # a name, or a mapping with the pair's parameters:
                               # {kind: power_difference, depth: 3, regularizer: l2}
init: {x0: 0.0, scale: 1.0}    # pair.init(x0, scale); matrix pairs:
                               # {scale: 0.01, seed: 0} or {aligned: true, scale: 1.0}
schedule:
  kind: switch_off             # any schedule family (SCHEDULES below)
  fixed: {}                    # parameters every configuration shares
  grid:                        # outer product; each axis [start, stop, num] or
    alpha: [0.0, 0.1, 32]      # {values: [...]} (lists, for vector parameters)
    t_off: [10.0, 100.0, 32]
t1: 200.0
solver: {formulation: auto, rtol: 1e-6, atol: 1e-9, max_steps: 100000}
sweep: {strategy: auto, chunk_size: 256, backend: auto}
precision: float64             # float64 | float32
```

The names come from the library's registries: pairs (`jm` classes, by snake-case
name), schedule families and their parameters (the constructors' arguments),
generated problems (`jm.datasets`), formulations, strategies and backends. Numbers
may be written as `1e-6` or `1.0e6` (YAML 1.2 floats; PyYAML alone reads them as
strings). Every error names the key path, e.g. `solver.rtol: must be a number > 0,
got -1.0`.
"""

import dataclasses
import inspect
import pathlib
import re

import numpy as np

from . import datasets as _datasets
from ._checking import short_repr
from ._formulations import FORMULATIONS as _FORMULATIONS
from ._kernels import CHOICES as BACKENDS
from ._memory import available_bytes, fits, human
from ._pairs import AbstractMatrixPair, PAIRS
from ._schedules import SCHEDULES
from ._sweep import CHOICES as STRATEGIES


FORMULATIONS = ("auto", *_FORMULATIONS)
TOP_KEYS = {"problem", "pair", "init", "schedule", "t1", "solver", "sweep", "precision"}
REQUIRED = ("problem", "pair", "schedule", "t1")
SOLVER_KEYS = {"formulation", "rtol", "atol", "max_steps"}
SWEEP_KEYS = {"strategy", "chunk_size", "backend"}


class ConfigError(ValueError):
    """A sweep configuration that does not validate: `key` is the path of the bad key."""

    def __init__(self, key: str, message: str):
        self.key, self.message = key, message
        super().__init__(f"{key}: {message}")


@dataclasses.dataclass
class SweepSpec:
    """A validated configuration: the inputs of `jm.sweep`."""

    problem: object
    truth: np.ndarray | None
    pair: object
    schedules: object
    w0: object
    t1: float
    options: dict
    raw: dict


def parameters(constructor) -> tuple[list[str], list[str]]:
    """A constructor's numeric parameters: `(required, optional)` (switches such as
    `learn_boundaries` are not configuration parameters)."""
    required, optional = [], []
    for name, parameter in inspect.signature(constructor).parameters.items():
        if name in ("self", "key") or isinstance(parameter.default, bool):
            continue
        empty = parameter.default is inspect.Parameter.empty
        (required if empty else optional).append(name)
    return required, optional


def _mapping(value, key):
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a mapping, got {type(value).__name__}.")
    return value


def _unknown(mapping, allowed, key):
    extra = sorted(set(mapping) - set(allowed), key=str)
    if extra:
        raise ConfigError(key, f"unknown key(s) {extra}; allowed: {sorted(allowed)}.")


def _choice(value, choices, key):
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(
            key, f"must be one of {list(choices)}, got {short_repr(value)}."
        )
    return value


def _number(value, key, positive=False, integer=False):
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and bool(np.isfinite(value)) and not (positive and value <= 0)
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "an integer" if integer else "a number"
        hint = " (write floats as 1e-6 or 1.0e-6)" if isinstance(value, str) else ""
        raise ConfigError(
            key,
            f"must be {kind}{' > 0' if positive else ''}, got {short_repr(value)}{hint}.",
        )
    return int(value) if integer else float(value)


def _numbers(value, key):
    """A number, or a (nested) list of numbers, as a NumPy array."""
    if isinstance(value, list):
        if not value:
            raise ConfigError(key, "must not be an empty list.")
        rows = [_numbers(v, key) for v in value]
        if len({row.shape for row in rows}) != 1:
            raise ConfigError(key, "must be a list of equal-length lists.")
        return np.stack(rows)
    return np.asarray(_number(value, key))


def _axis(value, key) -> np.ndarray:
    """A grid axis: its values along a new leading axis."""
    if isinstance(value, list) and len(value) == 3 and not isinstance(value[0], list):
        start, stop = _number(value[0], key), _number(value[1], key)
        num = _number(value[2], key, True, True)
        if num > MAX_VALUES:
            raise ConfigError(
                key, f"{num:,} points; an axis has at most {MAX_VALUES:,}."
            )
        return np.linspace(start, stop, num)
    if isinstance(value, dict) and set(value) == {"values"}:
        values = value["values"]
        if isinstance(values, list) and values:
            return _numbers(values, f"{key}.values")
    raise ConfigError(
        key,
        f"must be [start, stop, num] or {{values: [...]}}, got {short_repr(value)}.",
    )


def _yaml_loader():
    """PyYAML's safe loader, with YAML 1.2 floats (`1e-6`, `1.0e6`)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )
    return Loader


def load(path) -> dict:
    """Read a YAML file safely (no arbitrary objects)."""
    import yaml

    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError("config", f"no such file: {path}.")
    try:
        data = yaml.load(path.read_text(), Loader=_yaml_loader())  # noqa: S506 - safe
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError("config", f"not valid YAML ({first}).") from None
    except UnicodeDecodeError:
        raise ConfigError("config", "not a text file.") from None
    _check_expansion(data)
    return _mapping(data, "config")


MAX_VALUES = 1_000_000
"""The most values a configuration file may hold once its aliases are expanded."""


def _check_expansion(data) -> None:
    """Refuse a file whose aliases expand to more than `MAX_VALUES` values (a few
    hundred bytes of YAML can name billions), counting without expanding."""
    stack, count = [data], 0
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(
                "config",
                f"expands to more than {MAX_VALUES:,} values (through YAML aliases?); "
                "a sweep configuration is small.",
            )
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _dtype(raw):
    """The configured precision's dtype; float64 needs `jax_enable_x64` (which the
    `jaxmirror` command turns on: a library never flips global JAX configuration)."""
    import jax
    import jax.numpy as jnp

    precision = _choice(
        raw.get("precision", "float64"), ("float64", "float32"), "precision"
    )
    if precision == "float64" and not jax.config.jax_enable_x64:
        raise ConfigError(
            "precision",
            "float64 needs jax_enable_x64 (set it before building, as the `jaxmirror` "
            "command does).",
        )
    return jnp.dtype(precision)


def _cast(tree, dtype):
    import equinox as eqx
    import jax

    return jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, tree
    )


@dataclasses.dataclass
class _Problem:
    """A configured problem: the loss, its truth, and what a matrix pair may need."""

    problem: object
    truth: np.ndarray | None
    basis: np.ndarray | None = None  # the common left basis of commuting sensing


def _generated_problem(kind, problem_cfg) -> _Problem:
    """A problem from `jm.datasets`, its parameters those of the generator."""
    generator = _datasets.GENERATORS[kind]
    signature = inspect.signature(generator).parameters
    _unknown(problem_cfg, {"kind", *signature}, "problem")
    kwargs = {}
    for name, value in problem_cfg.items():
        default, key = signature.get(name, None), f"problem.{name}"
        if name == "kind":
            continue
        if isinstance(default.default, bool):
            if not isinstance(value, bool):
                raise ConfigError(
                    key, f"must be true or false, got {short_repr(value)}."
                )
            kwargs[name] = value
        else:
            integer = isinstance(default.default, int)
            positive = integer and name != "seed"  # sizes and counts
            kwargs[name] = _number(value, key, positive=positive, integer=integer)
    _check_footprint(kind, {**_defaults(generator), **kwargs}, problem_cfg)
    try:
        problem, truth, *rest = generator(**kwargs)
    except ValueError as error:
        raise ConfigError("problem", str(error)) from None
    basis = rest[0] if rest else None  # commuting sensing's left basis P
    return _Problem(problem, np.asarray(truth).reshape(-1), basis)


# The entries of each generated problem's arrays, from its sizes.
_FOOTPRINTS = {
    "sparse_regression": (("d", "n"), lambda p: p["d"] * p["n"]),
    "commuting_sensing": (("d", "n"), lambda p: p["d"] * p["n"] ** 2),
    "gaussian_sensing": (("d", "n1", "n2"), lambda p: p["d"] * p["n1"] * p["n2"]),
}


def _defaults(function) -> dict:
    return {
        name: parameter.default
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is not inspect.Parameter.empty
    }


def _check_footprint(kind, sizes: dict, given: dict) -> None:
    """Refuse sizes whose arrays cannot fit, naming the largest size given."""
    names, entries = _FOOTPRINTS[kind]
    nbytes = 8 * 2 * entries(sizes)  # the arrays, and a copy while they are made
    if not fits(nbytes):
        key = max((n for n in names if n in given), key=lambda n: sizes[n], default="")
        raise ConfigError(
            f"problem.{key}" if key else "problem",
            f"the problem's arrays ({', '.join(f'{n} = {sizes[n]:,}' for n in names)}) "
            f"would take about {human(nbytes)}, more than half of the "
            f"{human(available_bytes())} available.",
        )


def _npz_problem(problem_cfg, base: pathlib.Path) -> _Problem:
    import jaxmirror as jm

    _unknown(problem_cfg, {"kind", "path"}, "problem")
    if "path" not in problem_cfg or not isinstance(problem_cfg["path"], str):
        raise ConfigError("problem.path", "must be the path of an .npz file.")
    path = base / problem_cfg["path"]
    try:
        with np.load(path) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as error:
        raise ConfigError("problem.path", f"cannot read {path}: {error}") from None
    missing = sorted({"Z", "y"} - set(arrays))
    if missing:
        raise ConfigError("problem.path", f"{path} lacks the array(s) {missing}.")
    try:
        problem = jm.LeastSquares(arrays["Z"], arrays["y"])
    except ValueError as error:
        raise ConfigError("problem.path", f"{path}: {error}") from None
    truth = arrays.get("truth")
    if truth is not None and truth.shape != (problem.dim(),):
        raise ConfigError(
            "problem.path",
            f"`truth` in {path} must have shape ({problem.dim()},), got {truth.shape}.",
        )
    return _Problem(problem, truth)


def _build_problem(raw, dtype, base) -> _Problem:
    problem_cfg = _mapping(raw["problem"], "problem")
    kinds = (*_datasets.GENERATORS, "npz")
    kind = _choice(problem_cfg.get("kind"), kinds, "problem.kind")
    if kind == "npz":
        built = _npz_problem(problem_cfg, base)
    else:
        built = _generated_problem(kind, problem_cfg)
    built.problem = _cast(built.problem, dtype)
    return built


def _build_pair(raw, problem):
    """The configured pair: a name, or a mapping of its kind and parameters (a
    matrix pair's shape defaults to the problem's)."""
    pair_cfg, key = raw["pair"], "pair.kind"
    if isinstance(pair_cfg, str):
        pair_cfg, key = {"kind": pair_cfg}, "pair"
    pair_cfg = dict(_mapping(pair_cfg, "pair"))
    cls = PAIRS[_choice(pair_cfg.pop("kind", None), tuple(PAIRS), key)]
    allowed = inspect.signature(cls).parameters
    _unknown(pair_cfg, set(allowed), "pair")
    shape = getattr(problem, "shape", None)
    if issubclass(cls, AbstractMatrixPair) and shape is not None:
        for name, value in (("shape", tuple(shape)), ("n", shape[0])):
            if name in allowed:
                pair_cfg.setdefault(name, value)
    try:
        return cls(**pair_cfg)
    except (TypeError, ValueError) as error:
        raise ConfigError("pair", str(error)) from None


def _build_init(raw, pair, built: _Problem, dtype):
    import jax
    import jax.numpy as jnp

    init = _mapping(raw.get("init", {}), "init")
    if isinstance(pair, AbstractMatrixPair):
        _unknown(init, {"scale", "seed", "aligned"}, "init")
        scale = _number(init.get("scale", 1e-2), "init.scale", positive=True)
        if init.get("aligned", False) is True:
            if built.basis is None:
                raise ConfigError(
                    "init.aligned", "needs commuting measurements (commuting_sensing)."
                )
            return pair.init_aligned(jnp.asarray(built.basis, dtype), scale)
        seed = _number(init.get("seed", 0), "init.seed", integer=True)
        return pair.init(scale=scale, key=jax.random.PRNGKey(seed))
    _unknown(init, {"x0", "scale"}, "init")
    kwargs = {}
    if "scale" in init:
        kwargs["scale"] = _number(init["scale"], "init.scale", positive=True)
    x0 = jnp.full(built.problem.dim(), _number(init.get("x0", 0.0), "init.x0"), dtype)
    return pair.init(x0, **kwargs)


def _check_grid(axes: dict, n: int) -> None:
    """Refuse a grid whose configurations' parameters and results cannot fit."""
    count = int(np.prod([len(v) for v in axes.values()], dtype=float))
    width = sum(int(np.prod(v.shape[1:])) for v in axes.values()) + 2 * n + 16
    nbytes = 8 * 3 * count * width
    if not fits(nbytes):
        sizes = " x ".join(f"{len(v):,}" for v in axes.values())
        raise ConfigError(
            "schedule.grid",
            f"{sizes} = {count:,} configurations would take about {human(nbytes)} "
            f"for their parameters and results, more than half of the "
            f"{human(available_bytes())} available.",
        )


def _build_schedules(raw, dtype, n: int):
    import jaxmirror as jm

    schedule_cfg = _mapping(raw["schedule"], "schedule")
    _unknown(schedule_cfg, {"kind", "grid", "fixed"}, "schedule")
    kind = _choice(schedule_cfg.get("kind"), tuple(SCHEDULES), "schedule.kind")
    required, optional = parameters(SCHEDULES[kind])
    axes_cfg = _mapping(schedule_cfg.get("grid", {}), "schedule.grid")
    fixed_cfg = _mapping(schedule_cfg.get("fixed", {}), "schedule.fixed")
    for key, given in (("schedule.grid", axes_cfg), ("schedule.fixed", fixed_cfg)):
        _unknown(given, (*required, *optional), key)
    both = sorted(set(axes_cfg) & set(fixed_cfg))
    if both:
        raise ConfigError("schedule", f"{both} given in both `grid` and `fixed`.")
    missing = sorted(set(required) - set(axes_cfg) - set(fixed_cfg))
    if missing:
        raise ConfigError("schedule.grid", f"misses {missing} for kind {kind!r}.")
    if not axes_cfg:
        raise ConfigError("schedule.grid", "needs at least one axis (a sweep varies).")
    axes = {k: _axis(v, f"schedule.grid.{k}") for k, v in axes_cfg.items()}
    _check_grid(axes, n)
    index = jm.grid(**{k: np.arange(len(v)) for k, v in axes.items()})
    values = {k: axes[k][index[k].astype(int)] for k in axes}
    size = len(next(iter(index.values())))
    for name, value in fixed_cfg.items():  # vectors repeated along the batch
        fixed = _numbers(value, f"schedule.fixed.{name}")
        values[name] = (
            np.broadcast_to(fixed, (size, *fixed.shape)) if fixed.ndim else fixed
        )
    try:
        schedules = SCHEDULES[kind](**values)
    except ValueError as error:
        named = re.match(r"`(\w+)`", str(error))
        name = named.group(1) if named else None
        where = "grid" if name in axes_cfg else "fixed" if name in fixed_cfg else None
        key = f"schedule.{where}.{name}" if where else "schedule"
        raise ConfigError(key, str(error)) from None
    return _cast(schedules, dtype)


def _build_options(raw) -> dict:
    solver_cfg = _mapping(raw.get("solver", {}), "solver")
    _unknown(solver_cfg, SOLVER_KEYS, "solver")
    sweep_cfg = _mapping(raw.get("sweep", {}), "sweep")
    _unknown(sweep_cfg, SWEEP_KEYS, "sweep")
    options = {}
    if "formulation" in solver_cfg:
        options["formulation"] = _choice(
            solver_cfg["formulation"], FORMULATIONS, "solver.formulation"
        )
    for key in ("rtol", "atol"):
        if key in solver_cfg:
            options[key] = _number(solver_cfg[key], f"solver.{key}", positive=True)
    if "max_steps" in solver_cfg:
        options["max_steps"] = _number(
            solver_cfg["max_steps"], "solver.max_steps", True, True
        )
    if "strategy" in sweep_cfg:
        options["strategy"] = _choice(
            sweep_cfg["strategy"], STRATEGIES, "sweep.strategy"
        )
    if "backend" in sweep_cfg:
        options["backend"] = _choice(sweep_cfg["backend"], BACKENDS, "sweep.backend")
    if "chunk_size" in sweep_cfg:
        options["chunk_size"] = _number(
            sweep_cfg["chunk_size"], "sweep.chunk_size", True, True
        )
    return options


def build(raw: dict, base=".") -> SweepSpec:
    """Validate a configuration mapping and build the sweep's inputs.

    `base` is the directory that relative paths (`problem.path`) start from.
    """
    raw = _mapping(raw, "config")
    _unknown(raw, TOP_KEYS, "config")
    for key in REQUIRED:
        if key not in raw:
            raise ConfigError(key, "is required.")
    dtype = _dtype(raw)
    built = _build_problem(raw, dtype, pathlib.Path(base))
    pair = _build_pair(raw, built.problem)
    try:
        w0 = _build_init(raw, pair, built, dtype)
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        key = "init.scale" if str(error).startswith("`scale`") else "init.x0"
        raise ConfigError(key, str(error)) from None
    schedules = _build_schedules(raw, dtype, built.problem.dim())
    options = _build_options(raw)
    t1 = _number(raw["t1"], "t1", positive=True)
    return SweepSpec(
        built.problem, built.truth, pair, schedules, _cast(w0, dtype), t1, options, raw
    )


_YAML_KEYS = {
    "problem": "problem",
    "truth": "problem",
    "pair": "pair",
    "w0": "init",
    "t1": "t1",
    "formulation": "solver.formulation",
    "rtol": "solver.rtol",
    "atol": "solver.atol",
    "max_steps": "solver.max_steps",
    "solver": "solver",
    "stepsize_controller": "solver",
    "strategy": "sweep.strategy",
    "backend": "sweep.backend",
    "chunk_size": "sweep.chunk_size",
    "predict": "sweep",
    "labels": "labels",
    "jaxmirror_version": "jaxmirror's version",
    "jax_version": "JAX's version",
}


def yaml_key(field: str, raw: dict) -> str:
    """The configuration key behind a field of `jm.sweep`'s resume fingerprint (a
    CLI user wrote YAML, not API arguments): `schedules.alpha` is
    `schedule.grid.alpha` (or `schedule.fixed.alpha`), `w0` is `init`, ..."""
    head, _, rest = field.partition(".")
    if head == "schedules":
        if not rest:
            return "schedule.kind"
        schedule = raw.get("schedule") if isinstance(raw.get("schedule"), dict) else {}
        where = "fixed" if rest in (schedule.get("fixed") or {}) else "grid"
        return f"schedule.{where}.{rest}"
    return _YAML_KEYS.get(head, field)
