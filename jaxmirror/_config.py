"""Sweep configuration files (YAML), validated with messages that name the bad key.

Example (`jaxmirror sweep CONFIG.yaml --out DIR`):

```yaml
problem: {kind: sparse_regression, n: 100, d: 40, sparsity: 5, seed: 0}
# or your own data: {kind: npz, path: data.npz}  (arrays Z, y and optionally truth)
pair: hadamard                 # hadamard | diff_squares | square
init: {x0: 0.0, scale: 1.0}    # pair.init(x0, scale); square: {x0: 0.1}, no scale
schedule:
  kind: switch_off             # constant | switch_off | linear_decay | cosine | exponential_decay
  grid:                        # outer product; each axis [start, stop, num] or {values: [...]}
    alpha: [0.0, 0.1, 32]
    t_off: [10.0, 100.0, 32]
t1: 200.0
solver: {formulation: auto, rtol: 1e-6, atol: 1e-9, max_steps: 100000}  # auto | rowspace | dual | mirror | parameter
                               # rtol/atol: omit for the defaults by precision (jm.sweep)
sweep: {strategy: auto, chunk_size: 256, backend: auto}  # chunk_size: omit for adaptive chunks; backend: auto | xla | pallas
precision: float64             # float64 | float32
```

Numbers may be written as `1e-6` or `1.0e6` (YAML 1.2 floats; PyYAML alone reads
them as strings). Every error names the key path, e.g. `solver.rtol: must be a
number > 0, got -1.0`.
"""

import dataclasses
import pathlib
import re

import numpy as np

from ._formulations import FORMULATIONS as _REGISTRY


PAIRS = {"hadamard": "Hadamard", "diff_squares": "DiffSquares", "square": "Square"}
SCHEDULES = {
    "constant": ("Constant", ("alpha",)),
    "switch_off": ("SwitchOff", ("alpha", "t_off")),
    "linear_decay": ("LinearDecay", ("alpha", "t_end")),
    "cosine": ("Cosine", ("alpha", "t_end")),
    "exponential_decay": ("ExponentialDecay", ("alpha", "rate")),
}
FORMULATIONS = ("auto", *_REGISTRY)
STRATEGIES = ("auto", "vmap", "batched")
TOP_KEYS = {"problem", "pair", "init", "schedule", "t1", "solver", "sweep", "precision"}
REQUIRED = ("problem", "pair", "schedule", "t1")
PROBLEM_KEYS = {
    "sparse_regression": {"kind", "n", "d", "sparsity", "seed", "noise"},
    "npz": {"kind", "path"},
}
SOLVER_KEYS = {"formulation", "rtol", "atol", "max_steps"}
SWEEP_KEYS = {"strategy", "chunk_size", "backend"}
BACKENDS = ("auto", "xla", "pallas")


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


def _mapping(value, key):
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a mapping, got {type(value).__name__}.")
    return value


def _unknown(mapping, allowed, key):
    extra = sorted(set(mapping) - set(allowed), key=str)
    if extra:
        raise ConfigError(key, f"unknown key(s) {extra}; allowed: {sorted(allowed)}.")


def _choice(value, choices, key):
    if value not in choices:
        raise ConfigError(key, f"must be one of {list(choices)}, got {value!r}.")
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
            key, f"must be {kind}{' > 0' if positive else ''}, got {value!r}{hint}."
        )
    return int(value) if integer else float(value)


def _axis(value, key):
    if isinstance(value, list) and len(value) == 3:
        start, stop = _number(value[0], key), _number(value[1], key)
        return np.linspace(start, stop, _number(value[2], key, True, True))
    if isinstance(value, dict) and set(value) == {"values"}:
        values = value["values"]
        if isinstance(values, list) and values:
            return np.asarray([_number(v, f"{key}.values") for v in values])
    raise ConfigError(
        key, f"must be [start, stop, num] or {{values: [...]}}, got {value!r}."
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
    return _mapping(data, "config")


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


def _sparse_problem(problem_cfg):
    import jaxmirror as jm

    kwargs = {
        k: _number(problem_cfg[k], f"problem.{k}", positive=True, integer=True)
        for k in ("n", "d", "sparsity")
        if k in problem_cfg
    }
    if "seed" in problem_cfg:
        kwargs["seed"] = _number(problem_cfg["seed"], "problem.seed", integer=True)
    if "noise" in problem_cfg:
        kwargs["noise"] = _number(problem_cfg["noise"], "problem.noise")
    try:
        return jm.datasets.sparse_regression(**kwargs)
    except ValueError as error:
        raise ConfigError("problem", str(error)) from None


def _npz_problem(problem_cfg, base: pathlib.Path):
    import jaxmirror as jm

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
    return problem, truth


def _build_problem(raw, dtype, base):
    problem_cfg = _mapping(raw["problem"], "problem")
    kind = _choice(problem_cfg.get("kind"), tuple(PROBLEM_KEYS), "problem.kind")
    _unknown(problem_cfg, PROBLEM_KEYS[kind], "problem")
    if kind == "npz":
        problem, truth = _npz_problem(problem_cfg, base)
    else:
        problem, truth = _sparse_problem(problem_cfg)
    return _cast(problem, dtype), truth


def _build_pair_and_init(raw, n, dtype):
    import jax.numpy as jnp

    import jaxmirror as jm

    pair = getattr(jm, PAIRS[_choice(raw["pair"], tuple(PAIRS), "pair")])()
    init = _mapping(raw.get("init", {}), "init")
    _unknown(init, {"x0", "scale"}, "init")
    kwargs = {}
    if "scale" in init:
        kwargs["scale"] = _number(init["scale"], "init.scale", positive=True)
    x0 = jnp.full(n, _number(init.get("x0", 0.0), "init.x0"), dtype)
    try:
        w0 = pair.init(x0, **kwargs)
    except ValueError as error:
        key = "init.scale" if str(error).startswith("`scale`") else "init.x0"
        raise ConfigError(key, str(error)) from None
    return pair, _cast(w0, dtype)


def _build_schedules(raw, dtype):
    import jaxmirror as jm

    schedule_cfg = _mapping(raw["schedule"], "schedule")
    _unknown(schedule_cfg, {"kind", "grid"}, "schedule")
    kind = _choice(schedule_cfg.get("kind"), tuple(SCHEDULES), "schedule.kind")
    name, params = SCHEDULES[kind]
    axes_cfg = _mapping(schedule_cfg.get("grid", {}), "schedule.grid")
    _unknown(axes_cfg, params, "schedule.grid")
    missing = sorted(set(params) - set(axes_cfg))
    if missing:
        raise ConfigError("schedule.grid", f"misses {missing} for kind {kind!r}.")
    axes = {k: _axis(axes_cfg[k], f"schedule.grid.{k}") for k in params}
    try:
        schedules = getattr(jm, name)(**jm.grid(**axes))
    except ValueError as error:
        raise ConfigError("schedule.grid", str(error)) from None
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
    problem, truth = _build_problem(raw, dtype, pathlib.Path(base))
    pair, w0 = _build_pair_and_init(raw, problem.dim(), dtype)
    schedules = _build_schedules(raw, dtype)
    options = _build_options(raw)
    t1 = _number(raw["t1"], "t1", positive=True)
    return SweepSpec(problem, truth, pair, schedules, w0, t1, options, raw)
