r"""A sweep's compiled programs, kept across processes without tracing them again.

The persistent compilation cache (`_cache.py`) saves XLA's compilation, but its key is
computed from the lowered program, so every new process still traces and lowers each
program first: about 2 s for a sweep's solve, convergence and prediction programs on
a CPU, paid by every first call of a new shape in a notebook. `stored_program` keeps
each of these programs as a serialized `jax.export` artifact beside the compilation
cache, under a key computed *without tracing*; a later process deserializes it and
calls it (XLA's compilation then comes from the compilation cache).

**The key** is a SHA-256 of everything that shapes the program:

- the function (module and qualified name) and the source of the whole jaxmirror
  package (every `.py` file);
- the versions of jax, jaxlib, diffrax, equinox, lineax, optimistix and optax, and
  `EQX_ON_ERROR`;
- the devices (platform, kind, count) and JAX's settings that change tracing (x64,
  promotion rules, matmul precision, checks);
- jaxmirror's own tracing switches (`tracing_switch`: `_checking.validated`);
- every argument: arrays by shape, dtype and weak type (their values are the
  program's inputs); everything else by value: Python scalars, strings, enums, and
  Equinox modules, functions and classes *defined in jaxmirror or the libraries
  above* (their code is in the key), field by field.

Module-level constants are not in the key (their module's source is): a program
traced after a constant of jaxmirror was changed at run time would be stored under the
unchanged key. Change the source instead, or turn stored programs off.

Anything else makes the call run traced, as `eqx.filter_jit` would: a class or
function of the user's (its code is not in the key), a closure, an object without a
canonical description, an argument traced by an outer transformation, an array
spread over several devices. A stale program would return a wrong answer without an
error, so nothing is guessed. Programs that cannot be exported (a host callback) run
traced too.

On by default wherever the compilation cache is on (`jm.enable_compilation_cache`),
in `<cache dir>/jaxmirror-programs`; `JAXMIRROR_STORED_PROGRAMS=off` turns it off.
The first process that meets a program pays for one more lowering (export, then
call); the measured gain is in the documentation's *Performance* page.
"""

import dataclasses
import enum
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import pickle
import threading
import types

import equinox as eqx
import jax
import numpy as np


_LIBRARIES = ("jax", "jaxlib", "diffrax", "equinox", "lineax", "optimistix", "optax")
_TRUSTED = frozenset(_LIBRARIES + ("jaxmirror", "numpy", "builtins", "jaxtyping"))
_SETTINGS = (  # JAX settings that change what a function traces to
    "jax_enable_x64",
    "jax_numpy_rank_promotion",
    "jax_numpy_dtype_promotion",
    "jax_default_matmul_precision",
    "jax_enable_checks",
    "jax_debug_nans",
    "jax_debug_infs",
    "jax_default_prng_impl",
)
_FORMAT = 1  # of the files written; part of the key


class _Untrusted(Exception):
    """An argument whose description cannot capture everything that shapes the
    program."""


@dataclasses.dataclass(frozen=True)
class _Slot:
    """Where the i-th output array goes in the stored output structure."""

    index: int


def stored_program(fn):
    """`eqx.filter_jit(fn)`, kept across processes as an exported program (module
    docstring). Arrays are the program's inputs; everything else is static."""
    traced = eqx.filter_jit(fn)

    @functools.wraps(fn)
    def call(*args):
        directory = _directory()
        if directory is None:
            return traced(*args)
        try:
            key = _key(fn, args)
        except _Untrusted:
            return traced(*args)
        run = _program(key, fn, args, directory)
        return traced(*args) if run is None else run(args)

    call.traced = traced
    return call


def stored_result(fn):
    """`fn`, whose small result (ints, booleans, tuples of them) depends only on the
    shapes of its array arguments and the values of everything else, kept in this
    process and beside the stored programs: for decisions made by tracing
    (`jax.eval_shape`, `jax.make_jaxpr`), which cost as much in every new process as
    the tracing they do. Arguments that cannot be keyed across processes (module
    docstring) are kept in this process only, by the objects themselves."""
    known: dict = {}

    @functools.wraps(fn)
    def call(*args):
        path = None  # where the result is kept across processes, if it can be
        try:
            key = _key(fn, args)
        except _Untrusted:
            key = _local_key(args)
            if key is None:  # unhashable: decided every time
                return fn(*args)
        else:
            directory = _directory()
            path = None if directory is None else directory / f"{key}.result"
        if key in known:
            return known[key]
        try:
            value = pickle.loads(path.read_bytes())
        except Exception:  # absent (or no directory): compute it
            value = fn(*args)
            if path is not None:
                _write(path, value)
        if len(known) < _KEPT:
            known[key] = value
        return value

    return call


def _local_key(args):
    """`args` with every array replaced by its shape and dtype, if hashable: a key
    for this process only (a user's class stands in it as itself, not by name)."""
    is_leaf = lambda x: eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)
    dynamic, static = eqx.partition(args, is_leaf)
    shapes = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), dynamic, is_leaf=is_leaf
    )
    leaves, structure = jax.tree_util.tree_flatten(shapes)
    key = ("local", static, structure, tuple(leaves))
    try:
        hash(key)
    except TypeError:
        return None
    return key


# ------------------------------------------------------------------------ the store


_lock = threading.Lock()
_ready: dict[str, object] = {}  # key -> runner, in this process, the latest last
_refused: set[str] = set()  # keys whose programs could not be exported
_KEPT = 256  # runners kept in a process (each holds its serialized program)


def _directory() -> pathlib.Path | None:
    if os.environ.get("JAXMIRROR_STORED_PROGRAMS", "").strip().lower() in (
        "0",
        "off",
        "no",
        "false",
    ):
        return None
    cache = jax.config.jax_compilation_cache_dir
    if not cache or jax.config.jax_disable_jit:
        return None
    return pathlib.Path(cache) / "jaxmirror-programs"


def _program(key: str, fn, args, directory: pathlib.Path):
    """The runner for `key`: from this process, from disk, or exported now."""
    with _lock:  # host threads call the same program at once
        if key in _ready:
            _ready[key] = _ready.pop(key)  # the most recently used, last
            return _ready[key]
        if key in _refused:
            return None
        path = directory / f"{key}.jaxprogram"
        if path.with_suffix(".refused").exists():
            _refused.add(key)
            return None
        run = _load(path)
        if run is None:
            run = _export(fn, args, path)
        if run is None:
            _refused.add(key)
        else:
            _ready[key] = run
            if len(_ready) > _KEPT:  # forget the least recently used
                del _ready[next(iter(_ready))]
        return run


def _load(path: pathlib.Path):
    try:
        stored = pickle.loads(path.read_bytes())
        exported = jax.export.deserialize(stored["program"])
        template = pickle.loads(stored["template"])
        weak = stored["weak"]
    except Exception:  # absent, partly written or from another version: export again
        return None
    return _runner(exported, template, weak)


def _export(fn, args, path: pathlib.Path):
    dynamic, static = eqx.partition(args, eqx.is_array)
    leaves, in_tree = jax.tree_util.tree_flatten(dynamic)
    outputs = {}

    def flat(*leaves):
        out = fn(*eqx.combine(jax.tree_util.tree_unflatten(in_tree, leaves), static))
        out_dynamic, out_static = eqx.partition(out, eqx.is_array)
        out_leaves, out_tree = jax.tree_util.tree_flatten(out_dynamic)
        slots = [_Slot(i) for i in range(len(out_leaves))]
        outputs["template"] = eqx.combine(
            jax.tree_util.tree_unflatten(out_tree, slots), out_static
        )
        return out_leaves

    shapes = [
        jax.ShapeDtypeStruct(
            np.shape(x), x.dtype, weak_type=getattr(x, "weak_type", False)
        )
        for x in leaves
    ]
    try:
        exported = jax.export.export(jax.jit(flat))(*shapes)
        stored = {
            "program": exported.serialize(),
            "template": pickle.dumps(outputs["template"]),
            # A serialized program forgets which outputs were weakly typed.
            "weak": [aval.weak_type for aval in exported.out_avals],
        }
        if any(stored["weak"]) and _convert_element_type is None:
            raise NotImplementedError("weakly typed outputs")
    except Exception:  # a host callback, an unpicklable output: run it traced
        _write(path.with_suffix(".refused"), None)  # and never try again
        return None
    _write(path, stored)
    # This process runs what a later one will load: the same outputs, to the type.
    return _runner(
        jax.export.deserialize(stored["program"]), outputs["template"], stored["weak"]
    )


def _write(path: pathlib.Path, value) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_bytes(pickle.dumps(value))
        os.replace(partial, path)  # readers never see a partly written file
    except OSError:
        pass  # a read-only cache: keep it for this process only


def _runner(exported, template, weak):
    @jax.jit
    def call(*leaves):
        out = exported.call(*leaves)
        return [_weakly_typed(x) if w else x for x, w in zip(out, weak)]

    def run(args):
        out = call(*jax.tree_util.tree_leaves(eqx.filter(args, eqx.is_array)))
        return jax.tree_util.tree_map(
            lambda s: out[s.index] if isinstance(s, _Slot) else s, template
        )

    return run


def _weakly_typed(x):
    """`x`, marked weakly typed, as the traced program's output was (inside `jit`: no
    operation is added). A program whose outputs came back strongly typed would
    promote differently downstream."""
    return _convert_element_type(x, x.dtype, weak_type=True)


try:  # no public equivalent; without it, programs with weak outputs run traced
    from jax._src.lax.lax import _convert_element_type
except ImportError:  # pragma: no cover - a JAX that moved it
    _convert_element_type = None


# -------------------------------------------------------------------------- the key


def _key(fn, args) -> str:
    description = (
        _FORMAT,
        fn.__module__,
        fn.__qualname__,
        _environment(),
        _switches(),
        _describe(args),
    )
    return hashlib.sha256(repr(description).encode()).hexdigest()


_SWITCHES: list = []  # context variables that change what jaxmirror's code traces to


def tracing_switch(variable):
    """Register a `contextvars.ContextVar` whose value changes what jaxmirror's code
    traces to: its value becomes part of every key. **Returns:** `variable`."""
    _SWITCHES.append(variable)
    return variable


def _switches() -> tuple:
    return tuple((variable.name, repr(variable.get())) for variable in _SWITCHES)


@functools.cache
def _source_hash() -> str:
    package = pathlib.Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def _versions() -> tuple:
    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return tuple((name, version(name)) for name in _LIBRARIES)


def _environment() -> tuple:
    devices = jax.devices()
    return (
        _source_hash(),
        _versions(),
        os.environ.get("EQX_ON_ERROR"),
        (devices[0].platform, devices[0].device_kind, len(devices)),
        tuple((name, str(getattr(jax.config, name, None))) for name in _SETTINGS),
    )


def _trusted(thing) -> str:
    """`module.qualname` of a class or function from a library in the key."""
    module = getattr(thing, "__module__", None) or ""
    if module.split(".")[0] not in _TRUSTED:
        raise _Untrusted(module)
    return f"{module}.{getattr(thing, '__qualname__', thing)}"


def _describe(obj, static: bool = False):
    """A canonical, process-independent description of `obj` (module docstring).

    `static`: inside a static field of an Equinox module, where an array is part of
    the program (a constant), not one of its inputs: described by its values."""
    if isinstance(obj, jax.core.Tracer):
        raise _Untrusted("traced by an outer transformation")
    if isinstance(obj, jax.Array):
        if len(obj.sharding.device_set) > 1:
            raise _Untrusted("spread over several devices")
        if static:
            return _values(np.asarray(obj))
        return ("array", obj.shape, str(obj.dtype), bool(obj.weak_type))
    if isinstance(obj, np.ndarray):
        return _values(obj) if static else ("array", obj.shape, str(obj.dtype), False)
    if isinstance(obj, jax.ShapeDtypeStruct):
        return ("shape", obj.shape, str(obj.dtype), bool(obj.weak_type))
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        return (type(obj).__name__, repr(obj))
    if isinstance(obj, np.generic):
        return ("numpy", str(obj.dtype), repr(obj.item()))
    if isinstance(obj, np.dtype):
        return ("dtype", str(obj))
    if isinstance(obj, enum.Enum):
        return ("enum", _trusted(type(obj)), obj.name)
    if isinstance(obj, jax.sharding.Mesh):
        if obj.size > 1:
            raise _Untrusted("a mesh of several devices")
        return ("mesh", obj.axis_names)
    if isinstance(obj, (tuple, list)):
        kind = type(obj) if type(obj) in (tuple, list) else _trusted(type(obj))
        return (str(kind), tuple(_describe(item, static) for item in obj))
    if isinstance(obj, dict):
        items = sorted(
            (repr(_describe(k, True)), _describe(v, static)) for k, v in obj.items()
        )
        return ("dict", tuple(items))
    if isinstance(obj, type):
        return ("class", _trusted(obj))
    if isinstance(obj, types.FunctionType):
        if obj.__closure__:
            raise _Untrusted(f"a closure, {obj.__qualname__}")
        return ("function", _trusted(obj))
    if isinstance(obj, types.BuiltinFunctionType):
        return ("builtin", _trusted(obj))
    if dataclasses.is_dataclass(obj):  # Equinox modules
        fields = tuple(
            (
                field.name,
                _describe(
                    getattr(obj, field.name),
                    static or bool(field.metadata.get("static", False)),
                ),
            )
            for field in dataclasses.fields(obj)
        )
        return ("module", _trusted(type(obj)), fields)
    if callable(obj) and hasattr(obj, "__wrapped__"):  # jax.custom_jvp and the like
        return ("wrapped", _trusted(type(obj)), _describe(obj.__wrapped__, static))
    raise _Untrusted(type(obj).__qualname__)


def _values(array: np.ndarray) -> tuple:
    digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
    return ("values", array.shape, str(array.dtype), digest)
