"""Sweep configuration files (YAML), validated with messages that name the bad key.

Example (`jaxmirror sweep CONFIG.yaml --out DIR`):

```yaml
problem: {kind: sparse_regression, n: 100, d: 40, sparsity: 5, seed: 0}
pair: hadamard                 # hadamard | diff_squares | square
init: {x0: 0.0, scale: 1.0}    # pair.init(x0, scale); square: {x0: 0.1}, no scale
schedule:
  kind: switch_off             # constant | switch_off | linear_decay | cosine | exponential_decay
  grid:                        # outer product; each axis [start, stop, num] or a list of values
    alpha: [0.0, 0.1, 32]
    t_off: [10.0, 100.0, 32]
t1: 200.0
solver: {formulation: auto, rtol: 1.0e-6, atol: 1.0e-9, max_steps: 100000}  # auto | rowspace | dual | mirror | parameter
sweep: {strategy: auto, chunk_size: 256}
precision: float64             # float64 | float32
```
"""

import dataclasses
import pathlib

import numpy as np


PAIRS = {"hadamard": "Hadamard", "diff_squares": "DiffSquares", "square": "Square"}
SCHEDULES = {
    "constant": ("Constant", ("alpha",)),
    "switch_off": ("SwitchOff", ("alpha", "t_off")),
    "linear_decay": ("LinearDecay", ("alpha", "t_end")),
    "cosine": ("Cosine", ("alpha", "t_end")),
    "exponential_decay": ("ExponentialDecay", ("alpha", "rate")),
}
TOP_KEYS = {"problem", "pair", "init", "schedule", "t1", "solver", "sweep", "precision"}
REQUIRED = {"problem", "pair", "schedule", "t1"}
PROBLEM_KEYS = {"kind", "n", "d", "sparsity", "seed", "noise"}
SOLVER_KEYS = {"formulation", "rtol", "atol", "max_steps"}
SWEEP_KEYS = {"strategy", "chunk_size"}


class ConfigError(ValueError):
    """A sweep configuration file that does not validate."""


@dataclasses.dataclass
class SweepSpec:
    problem: object
    truth: np.ndarray
    pair: object
    schedules: object
    w0: object
    t1: float
    options: dict
    raw: dict


def _mapping(value, where):
    if not isinstance(value, dict):
        raise ConfigError(f"`{where}` must be a mapping, got {type(value).__name__}.")
    return value


def _unknown(mapping, allowed, where):
    extra = sorted(set(mapping) - set(allowed))
    if extra:
        raise ConfigError(
            f"unknown key(s) {extra} in `{where}`; allowed: {sorted(allowed)}."
        )


def _number(value, where, positive=False, integer=False):
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if integer:
        ok = ok and float(value).is_integer()
    if not ok or not np.isfinite(value) or (positive and value <= 0):
        kind = "an integer" if integer else "a number"
        raise ConfigError(
            f"`{where}` must be {kind}{' > 0' if positive else ''}, got {value!r}."
        )
    return int(value) if integer else float(value)


def _axis(value, where):
    if (
        isinstance(value, list)
        and len(value) == 3
        and all(isinstance(v, int | float) for v in value)
    ):
        start, stop, num = value
        return np.linspace(
            _number(start, where), _number(stop, where), _number(num, where, True, True)
        )
    if isinstance(value, dict) and set(value) == {"values"}:
        return np.asarray([_number(v, where) for v in value["values"]])
    raise ConfigError(
        f"`{where}` must be [start, stop, num] or {{values: [...]}}, got {value!r}."
    )


def load(path) -> dict:
    """Read a YAML file safely (no arbitrary objects)."""
    import yaml

    text = pathlib.Path(path).read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from error
    return _mapping(data, "the configuration file")


def _dtype(raw):
    """The configured precision's dtype; float64 needs `jax_enable_x64` (which the
    `jaxmirror` command turns on: a library never flips global JAX configuration)."""
    import jax
    import jax.numpy as jnp

    precision = raw.get("precision", "float64")
    if precision not in ("float64", "float32"):
        raise ConfigError(f"`precision` must be float64 or float32, got {precision!r}.")
    if precision == "float64" and not jax.config.jax_enable_x64:
        raise ConfigError(
            "`precision` float64 needs jax_enable_x64 (set it before building, as the "
            "`jaxmirror` command does)."
        )
    return jnp.dtype(precision)


def _cast(tree, dtype):
    import equinox as eqx
    import jax

    return jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, tree
    )


def _build_problem(raw, dtype):
    import jaxmirror as jm

    problem_cfg = _mapping(raw["problem"], "problem")
    _unknown(problem_cfg, PROBLEM_KEYS, "problem")
    if problem_cfg.get("kind") != "sparse_regression":
        raise ConfigError(
            f"`problem.kind` must be 'sparse_regression', got {problem_cfg.get('kind')!r}."
        )
    kwargs = {
        k: _number(problem_cfg[k], f"problem.{k}", positive=True, integer=True)
        for k in ("n", "d", "sparsity")
        if k in problem_cfg
    }
    if "seed" in problem_cfg:
        kwargs["seed"] = _number(problem_cfg["seed"], "problem.seed", integer=True)
    if "noise" in problem_cfg:
        kwargs["noise"] = _number(problem_cfg["noise"], "problem.noise")
    problem, truth = jm.datasets.sparse_regression(**kwargs)
    return _cast(problem, dtype), truth


def _build_pair_and_init(raw, n, dtype):
    import jax.numpy as jnp

    import jaxmirror as jm

    if raw["pair"] not in PAIRS:
        raise ConfigError(
            f"`pair` must be one of {sorted(PAIRS)}, got {raw['pair']!r}."
        )
    pair = getattr(jm, PAIRS[raw["pair"]])()
    init = _mapping(raw.get("init", {}), "init")
    _unknown(init, {"x0", "scale"}, "init")
    kwargs = {}
    if "scale" in init:
        kwargs["scale"] = _number(init["scale"], "init.scale", positive=True)
    x0 = jnp.full(n, _number(init.get("x0", 0.0), "init.x0"), dtype)
    try:
        w0 = pair.init(x0, **kwargs)
    except ValueError as error:
        raise ConfigError(f"`init`: {error}") from error
    return pair, _cast(w0, dtype)


def _build_schedules(raw, dtype):
    import jaxmirror as jm

    schedule_cfg = _mapping(raw["schedule"], "schedule")
    _unknown(schedule_cfg, {"kind", "grid"}, "schedule")
    kind = schedule_cfg.get("kind")
    if kind not in SCHEDULES:
        raise ConfigError(
            f"`schedule.kind` must be one of {sorted(SCHEDULES)}, got {kind!r}."
        )
    name, params = SCHEDULES[kind]
    axes_cfg = _mapping(schedule_cfg.get("grid", {}), "schedule.grid")
    _unknown(axes_cfg, params, "schedule.grid")
    missing = sorted(set(params) - set(axes_cfg))
    if missing:
        raise ConfigError(
            f"`schedule.grid` misses {missing} for schedule kind {kind!r}."
        )
    axes = {k: _axis(axes_cfg[k], f"schedule.grid.{k}") for k in params}
    return _cast(getattr(jm, name)(**jm.grid(**axes)), dtype)


def _build_options(raw) -> dict:
    solver_cfg = _mapping(raw.get("solver", {}), "solver")
    _unknown(solver_cfg, SOLVER_KEYS, "solver")
    sweep_cfg = _mapping(raw.get("sweep", {}), "sweep")
    _unknown(sweep_cfg, SWEEP_KEYS, "sweep")
    options = {}
    if "formulation" in solver_cfg:
        options["formulation"] = str(solver_cfg["formulation"])
    for key in ("rtol", "atol"):
        if key in solver_cfg:
            options[key] = _number(solver_cfg[key], f"solver.{key}", positive=True)
    if "max_steps" in solver_cfg:
        options["max_steps"] = _number(
            solver_cfg["max_steps"], "solver.max_steps", True, True
        )
    if "strategy" in sweep_cfg:
        options["strategy"] = str(sweep_cfg["strategy"])
    if "chunk_size" in sweep_cfg:
        options["chunk_size"] = _number(
            sweep_cfg["chunk_size"], "sweep.chunk_size", True, True
        )
    return options


def build(raw: dict) -> SweepSpec:
    """Validate a configuration mapping and build the sweep's inputs."""
    _unknown(raw, TOP_KEYS, "the configuration file")
    missing = sorted(REQUIRED - set(raw))
    if missing:
        raise ConfigError(
            f"missing required key(s) {missing} in the configuration file."
        )
    dtype = _dtype(raw)
    problem, truth = _build_problem(raw, dtype)
    pair, w0 = _build_pair_and_init(raw, problem.dim(), dtype)
    schedules = _build_schedules(raw, dtype)
    options = _build_options(raw)
    t1 = _number(raw["t1"], "t1", positive=True)
    return SweepSpec(problem, truth, pair, schedules, w0, t1, options, raw)
