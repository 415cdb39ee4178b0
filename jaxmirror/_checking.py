"""The checking mechanism: how a check raises, eagerly or inside compiled code.

Facts known at trace time raise ``ValueError`` at once. Facts about values raise
``ValueError`` when the value is concrete (the common, eager case) and otherwise go
through :func:`equinox.error_if`, so they still fire under ``jit`` and ``vmap``.
`validated` and `flagged` change what a traced check does (trust, or record), and
`call_checked` uses them to run a function's checks in one compiled program. The
checks of each entry point's arguments are in `_arguments.py`; the value checks
every module shares (`check_finite`, `check_scale`, ...) are here.
"""

import contextlib
import contextvars
import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from ._programs import stored_program, tracing_switch


def float_dtype():
    """The default floating dtype: float64 under ``jax_enable_x64``, else float32."""
    return jnp.result_type(float)


def as_float_array(x, name: str = "value") -> Array:
    """Convert to an array of the default floating dtype (keeps tracers traced).

    Complex numbers are refused (a cast would drop their imaginary parts silently),
    naming the argument `name`.
    """
    # Constants stay concrete even inside a jit trace, so their checks run eagerly.
    with jax.ensure_compile_time_eval():
        x = jnp.asarray(x)
        if jnp.iscomplexobj(x):
            raise ValueError(f"`{name}` must be real, got a {x.dtype} array.")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(float_dtype())
    return x


REPR_LIMIT = 200
"""The most characters of a value an error message shows."""


def short_repr(value, limit: int = REPR_LIMIT) -> str:
    """`repr(value)`, shortened to about `limit` characters (a bad value can be a
    large array, or a YAML alias expanded a million times)."""
    text = (
        np.array2string(value, threshold=8)
        if isinstance(value, np.ndarray)
        else repr(value)
    )
    if len(text) <= limit:
        return text
    keep = limit // 2 - 3
    return f"{text[:keep]} ... {text[-keep:]} ({len(text):,} characters)"


def is_concrete(*xs) -> bool:
    """True when no leaf of ``xs`` is a tracer (the values can be inspected now)."""
    leaves = jax.tree_util.tree_leaves(xs)
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in leaves)


_VALIDATED = tracing_switch(
    contextvars.ContextVar("jaxmirror_validated", default=False)
)


@contextlib.contextmanager
def validated():
    """Inside this block, traced values are trusted: `check` adds no `eqx.error_if`.

    For jaxmirror's own compiled programs, whose inputs were checked eagerly first:
    an `error_if` is a host callback, and a program with one is never stored in the
    persistent compilation cache.
    """
    token = _VALIDATED.set(True)
    try:
        yield
    finally:
        _VALIDATED.reset(token)


_FLAGS = contextvars.ContextVar("jaxmirror_check_flags", default=None)


def flagged(fn: Callable) -> Callable:
    """`fn` that also returns whether every `check` on its traced values holds.

    `flagged(fn)(*args)` is `(fn(*args), ok)`: inside it, `check` adds no
    `eqx.error_if` but records its condition, and `ok` is their conjunction (a boolean
    array, batched under `vmap`). Traced under `jit`, this makes a program with no
    host callback, which the persistent compilation cache can keep (see
    `validated`). For the check's own message, call `fn` eagerly where `ok` fails.
    """

    @functools.wraps(fn)
    def with_flags(*args, **kwargs):
        token = _FLAGS.set([])
        try:
            out = fn(*args, **kwargs)
            flags = _FLAGS.get()
        finally:
            _FLAGS.reset(token)
        ok = jnp.asarray(True)
        for flag in flags:
            ok = ok & jnp.all(flag)
        return out, ok

    return with_flags


def call_checked(fn: Callable, *args, in_axes=None, mapped_failure: str = ""):
    """`fn(*args)`, or `eqx.filter_vmap(fn, in_axes=in_axes)(*args)`, its checks
    raising now.

    With concrete inputs, first as one compiled program that also says whether every
    `check` holds (`flagged`: no host callback, so the persistent compilation cache
    keeps it, where the same checks op by op would compile dozens of small programs
    per shape); only where one fails, or the program cannot be built (a user's code,
    say), eagerly again, for the check's own message. Traced inputs (a user's `jit`,
    `vmap` or `grad`) are passed straight through, their checks as `eqx.error_if`.

    `fn` must be hashable (a function, or a bound method of an Equinox module): it
    keys the compiled program. Under `in_axes`, an eager failure is raised as a
    `ValueError` whose message starts with `mapped_failure` (an `error_if` raised
    under `vmap` carries Equinox's banner instead of the check's words).
    """
    if is_concrete(args):
        try:
            out, ok = _flagged_call(fn, in_axes, args)
            if bool(ok):
                return out
        except Exception:  # noqa: BLE001 - the eager call below reports it
            pass
    if in_axes is None:
        return fn(*args)
    try:
        return eqx.filter_vmap(fn, in_axes=in_axes)(*args)
    except Exception as error:  # noqa: BLE001 - error_if under vmap: say it plainly
        raise ValueError(f"{mapped_failure}{runtime_message(error)}") from None


@stored_program
def _flagged_call(fn, in_axes, args):
    checked = flagged(fn)
    if in_axes is None:
        return checked(*args)
    out, ok = eqx.filter_vmap(checked, in_axes=in_axes)(*args)
    return out, jnp.all(ok)


def runtime_message(error: Exception) -> str:
    """The message of an `eqx.error_if` raised at run time, without Equinox's stack
    banner ("Above is the stack outside of JIT...") and debugging advice."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        prefix, found, message = line.partition("EquinoxRuntimeError: ")
        if found and prefix in ("", "equinox."):
            return message
    return next((line for line in lines if not line.startswith("Above is")), "")


def check(
    name: str,
    x: Array,
    ok: Callable[[Array], Array],
    expected: str,
) -> Array:
    """Check that ``ok(x)`` holds everywhere; return ``x`` (use the return value).

    Raises ``ValueError("`name` must be expected, got ...")`` for concrete inputs and
    wraps ``x`` in :func:`equinox.error_if` for traced ones (inside `flagged`, records
    ``ok(x)`` instead; inside `validated`, trusts ``x``).
    """
    if is_concrete(x):
        # Concrete values inside a jit trace still evaluate eagerly here.
        with jax.ensure_compile_time_eval():
            holds = bool(np.all(np.asarray(ok(x))))
        if not holds:
            shown = np.array2string(np.asarray(x), threshold=8, precision=6)
            raise ValueError(f"`{name}` must be {expected}, got {shown}.")
        return x
    flags = _FLAGS.get()
    if flags is not None:
        flags.append(ok(x))
        return x
    if _VALIDATED.get():
        return x
    return eqx.error_if(
        x, jnp.logical_not(jnp.all(ok(x))), f"`{name}` must be {expected}."
    )


def check_finite(name: str, x: Array) -> Array:
    return check(name, x, jnp.isfinite, "finite (no NaN or inf)")


def check_nonnegative(name: str, x: Array) -> Array:
    return check(name, x, lambda v: jnp.isfinite(v) & (v >= 0), "finite and >= 0")


def check_positive(name: str, x: Array) -> Array:
    return check(name, x, lambda v: jnp.isfinite(v) & (v > 0), "finite and > 0")


def is_prng_key(x) -> bool:
    """True for a typed PRNG key or a raw ``uint32[2]`` key from ``jax.random.PRNGKey``."""
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        return True
    return getattr(x, "dtype", None) == jnp.uint32 and jnp.shape(x)[-1:] == (2,)


def check_point(name: str, x) -> Array:
    """A finite vector of shape ``(n,)`` (a model point such as ``x0``)."""
    if is_prng_key(x):
        raise ValueError(
            f"`{name}` must be a model point of shape (n,), got a PRNG key; pass keys as "
            "`key=...`."
        )
    x = as_float_array(x, name)
    if x.ndim != 1:
        raise ValueError(
            f"`{name}` must be a vector of shape (n,), got shape {x.shape}."
        )
    return check_finite(name, x)


def check_scale(name: str, scale, power: int) -> Array:
    """A scale > 0 whose ``power``-th power is a normal float of its dtype.

    Pairs store ``scale**power`` (e.g. ``m0**2 - w0**2 = scale**2``): outside this range
    it under- or overflows and the initialisation would silently be 0, NaN or inf.
    """
    scale = as_float_array(scale, "scale")
    info = jnp.finfo(scale.dtype)
    low = float(info.tiny) ** (1.0 / power)
    high = float(info.max) ** (1.0 / power)
    expected = (
        f"in [{low:.3g}, {high:.3g}] for {scale.dtype} (scale**{power} must be a "
        "normal floating-point number)"
    )
    return check(name, scale, lambda v: (v >= low) & (v <= high), expected)
