r"""Where a sweep's results live: one Zarr store, written chunk by chunk.

Storage is kept apart from the numerics (the rest of `_sweep/`). A sweep into `out` holds:

- a **lock** (`.OUT.jaxmirror.lock` beside `out`, an OS file lock through `filelock`):
  a second run
  into the same directory is refused at once; the operating system releases the lock
  of a killed process, so a stale lock never blocks a resume;
- a **fingerprint** of everything that determines the results (each schedule
  parameter, w0, the problem's arrays, the truth, labels, pair, formulation, solver and
  options, jaxmirror's and JAX's versions), one digest per field, in the store's
  attributes: a resume compares it field by field and refuses, naming every field that
  changed, before it touches anything on disk;
- the **results**, a Zarr (format 3) store that `xarray.open_zarr(out)` opens. Every
  variable has its full size from the start; each chunk of configurations is written
  into its region, and its `status` last: `status` is `PENDING` (-1) until a
  configuration's other variables are all written. So a reader never sees a partly
  written configuration (anything not pending is complete), and a resume recomputes
  exactly the pending ones. Zarr replaces each stored block atomically.

Memory stays bounded by the chunk: nothing holds the whole sweep.
"""

import contextlib
import dataclasses
import hashlib
import json
import pathlib
import warnings

import equinox as eqx
import jax
import numpy as np

from .._status import BiasStatus, Status
from .._version import __version__
from ._integrity import (
    DamagedStoreError,
    FINGERPRINT,
    FORMAT,
    inspect,
    MARKER,
    PENDING,
    scan,
    StoreError,
)


_LONG_NAMES = {
    "x_final": "model point x = g(w) at t1",
    "x_predicted": "predicted limit of the flow (jm.implicit_bias)",
    "loss": "loss f(x) at t1",
    "status": "outcome of the solve (jm.Status)",
    "converged": "x(t1) at the flow's limit within the tolerances",
    "distance_to_limit": "estimated max-norm distance from x(t1) to the limit",
    "num_steps": "ODE solver steps",
    "bias_status": "outcome of the prediction (jm.BiasStatus)",
    "recovery_error": "Euclidean distance |x(t1) - truth|",
    "predicted_recovery_error": "Euclidean distance |x_predicted - truth|",
    "config": "configuration index",
    "coord": "index of the model point's coordinate",
}


def variable_attributes(name: str) -> dict:
    """CF attributes of a sweep variable: `long_name`, and flags for status codes."""
    attrs = {"long_name": _LONG_NAMES.get(name, name)}
    if name == "status":
        flags = Status.flag_attributes()
        attrs["flag_values"] = [PENDING] + flags["flag_values"]
        attrs["flag_meanings"] = "pending " + flags["flag_meanings"]
    elif name == "bias_status":
        attrs.update(BiasStatus.flag_attributes())
    return attrs


def _update(hasher, part) -> None:
    """Feed a stable description of `part` to the hash (no memory addresses)."""
    if eqx.is_array(part) or isinstance(part, np.ndarray | np.generic):
        array = np.ascontiguousarray(np.asarray(part))
        hasher.update(f"array{array.dtype}{array.shape}".encode())
        hasher.update(array.tobytes())
    elif isinstance(part, eqx.Module):
        hasher.update(type(part).__qualname__.encode())
        for field in dataclasses.fields(part):
            hasher.update(field.name.encode())
            _update(hasher, getattr(part, field.name))
    elif isinstance(part, list | tuple):
        hasher.update(f"{type(part).__name__}{len(part)}".encode())
        for item in part:
            _update(hasher, item)
    elif isinstance(part, dict):
        for key in sorted(part, key=str):
            hasher.update(str(key).encode())
            _update(hasher, part[key])
    elif callable(part) and hasattr(part, "__code__"):
        code = part.__code__
        hasher.update(f"{part.__module__}.{part.__qualname__}".encode())
        hasher.update(code.co_code + repr(code.co_consts).encode())
        for cell in part.__closure__ or ():
            _update(hasher, cell.cell_contents)
    else:
        hasher.update(repr(part).encode())


def _digest(*parts) -> str:
    hasher = hashlib.sha256()
    for part in parts:
        _update(hasher, part)
    return hasher.hexdigest()[:16]


def _module_fields(prefix: str, module) -> dict[str, str]:
    """A digest of the module's kind and static parts, and one per array field."""
    arrays, static = eqx.partition(module, eqx.is_array)
    fields = {prefix: _digest(static)}
    for field in dataclasses.fields(arrays):
        leaves = jax.tree_util.tree_leaves(getattr(arrays, field.name))
        if leaves:
            fields[f"{prefix}.{field.name}"] = _digest(*leaves)
    return fields


def fingerprint(inputs: dict, settings: dict) -> dict[str, str]:
    """A digest per field that determines a sweep's results.

    **Arguments:**

    - `inputs`: `problem`, `pair`, `schedules` (Equinox modules), `w0` (a pytree),
      `truth` (array or None), `labels` (mapping of arrays).
    - `settings`: plain values (formulation, solver, tolerances, ...).
    """
    fields = {}
    for name in ("problem", "pair", "schedules"):
        fields.update(_module_fields(name, inputs[name]))
    fields["w0"] = _digest(*jax.tree_util.tree_leaves(inputs["w0"]))
    fields["truth"] = _digest(inputs["truth"])
    for name, value in (inputs["labels"] or {}).items():
        fields[f"labels.{name}"] = _digest(np.asarray(value))
    for name, value in {**settings, **versions()}.items():
        fields[name] = _digest(value)
    return fields


def versions() -> dict[str, str]:
    """The versions of the code that computes a sweep (part of its fingerprint)."""
    return dict(jaxmirror_version=__version__, jax_version=jax.__version__)


def _changed(previous: dict, current: dict) -> list[str]:
    return sorted(
        k for k in set(previous) | set(current) if previous.get(k) != current.get(k)
    )


def lock_path(out: pathlib.Path) -> pathlib.Path:
    """The lock of a sweep into `out`: a hidden file beside the store (inside it, zarr
    would warn of a file that is not part of the store), named after the folder
    itself, whatever path spells it (links and relative parts resolved)."""
    out = pathlib.Path(out).expanduser().resolve()
    return out.parent / f".{out.name}.jaxmirror.lock"


class ResumeMismatch(ValueError):
    """A resume whose inputs differ from the stored sweep's: `changed` names them."""

    def __init__(self, spelled, changed: list[str]):
        self.spelled, self.changed = spelled, changed
        super().__init__(
            f"`resume`: the sweep in {spelled} was run with other inputs; changed: "
            f"{', '.join(changed)}. Nothing on disk was changed; run into another "
            "directory to keep both."
        )


class SweepStore:
    """The output directory of one sweep (see the module docstring and
    `_integrity.py`).

    Only process 0 writes and locks (several hosts share one result).
    """

    def __init__(self, out):
        """Lock `out` at once, before any other work (a second run is refused fast),
        after checking that a sweep may write there (`_integrity.inspect`: a folder
        that is neither new, empty nor a jaxmirror store is refused untouched)."""
        import filelock

        self.spelled = out
        self.path = pathlib.Path(out).expanduser().resolve()
        self.writer = jax.process_index() == 0
        self.fields, self.exists, self.contents = None, False, None
        self._lock = None
        if not self.writer:
            return
        try:  # a folder that is not ours is refused before the lock file is made
            inspect(self.path, out)
        except DamagedStoreError:
            pass  # or another sweep is writing it: decided under the lock, below
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = filelock.FileLock(lock_path(self.path))
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            raise ValueError(
                f"`out`: {out} is in use by another running sweep (its lock is held); "
                "wait for it to finish, or choose another directory."
            ) from None
        try:  # again, now that no other sweep can change it
            self.contents = inspect(self.path, out)
        except BaseException:
            self.close()
            raise

    def check(self, fields: dict[str, str], resume: bool, repair: bool = False):
        """Compare the sweep's fingerprint with a stored one, if any, and check a
        store to be resumed for damage (module docstring)."""
        self.fields = fields
        if self.writer:  # the other processes neither read nor write the store
            self.exists = self._check_existing(resume, repair)

    def _check_existing(self, resume: bool, repair: bool) -> bool:
        if not self.contents.finished_creating:
            return False  # new, or an unfinished creation of ours: laid out afresh
        if not resume:
            raise ValueError(
                f"`out`: {self.spelled} already holds a sweep; resume it (resume=True, "
                "or --resume), or choose another directory."
            )
        previous = json.loads(self.contents.attrs[FINGERPRINT])
        changed = _changed(previous, self.fields)
        if changed:
            raise ResumeMismatch(self.spelled, changed)
        report = scan(self.path, full=True)
        if report.healthy:
            return True
        if not repair:
            raise StoreError(
                f"`resume`: {self.spelled} is damaged: {report.problems[0]} Run "
                f"`jaxmirror check {self.spelled}` to list what is damaged, and resume "
                "with repair=True (--repair) to recompute the damaged configurations."
            )
        self._mark_pending(sorted(report.damaged))
        return True

    def _mark_pending(self, configurations: list[int]) -> None:
        """Set the status of damaged configurations to pending, so that the resume
        recomputes them (their other variables are rewritten with them)."""
        import zarr

        status = zarr.open_array(self.path / "status", mode="r+")
        unit = status.chunks[0]
        for block in sorted({i // unit for i in configurations}):
            rows = slice(block * unit, min(status.shape[0], (block + 1) * unit))
            try:
                values = np.asarray(status[rows])
            except Exception:  # noqa: BLE001 - an undecodable status chunk: all pending
                values = np.full(rows.stop - rows.start, PENDING, status.dtype)
            for i in configurations:
                if rows.start <= i < rows.stop:
                    values[i - rows.start] = PENDING
            status[rows] = values

    def create(self, first, size: int, unit: int, coords: dict, attrs: dict) -> None:
        """Lay out every variable of `first` (a chunk's dataset) at its full size.

        Only into a new or empty directory, or an unfinished creation of ours
        (`_integrity.inspect`): arrays are replaced (`overwrite=True`) only there.
        """
        import zarr

        if not self.writer:
            return
        # mode "a" with arrays overwritten one by one, never "w": that would empty the
        # directory, the lock file included. The marker first: from here on the
        # folder is recognisably ours. (The folder is made here, with the first
        # results: a sweep refused before them leaves no empty folder behind.)
        self.path.mkdir(parents=True, exist_ok=True)
        root = zarr.open_group(self.path, mode="a", zarr_format=3)
        root.attrs.update({MARKER: FORMAT})
        coords = {"config": np.arange(size), **coords}
        along_config = " ".join(name for name in coords if name != "config")
        for name, variable in first.data_vars.items():
            shape = (size,) + variable.shape[1:]
            fill = PENDING if name == "status" else _fill_value(variable.dtype)
            array = root.create_array(
                name,
                shape=shape,
                chunks=(unit,) + variable.shape[1:],
                dtype=variable.dtype,
                fill_value=fill,
                dimension_names=variable.dims,
                overwrite=True,
                config={"write_empty_chunks": True},  # a missing chunk is damage
            )
            array.attrs.update(variable_attributes(name))
            if along_config:  # CF: the non-dimension coordinates of the variable
                array.attrs["coordinates"] = along_config
        indexes = {name: (values, ("config",)) for name, values in coords.items()}
        if "coord" in first.sizes:  # the point's axis, for multi-dimensional variables
            indexes["coord"] = (np.arange(first.sizes["coord"]), ("coord",))
        for name, (values, dims) in indexes.items():
            values = np.asarray(values)
            array = root.create_array(
                name,
                shape=values.shape,
                chunks=values.shape,
                dtype=values.dtype,
                fill_value=_fill_value(values.dtype),
                dimension_names=dims if values.ndim else (),
                overwrite=True,
                config={"write_empty_chunks": True},  # a missing chunk is damage
            )
            array[...] = values
            array.attrs.update(variable_attributes(name))
        # The fingerprint last: a store without it is an unfinished creation.
        root.attrs.update({**attrs, FINGERPRINT: json.dumps(self.fields)})
        self._consolidate()
        self.exists = True

    def pending(self) -> np.ndarray:
        """Which configurations are still to be computed (status `PENDING`)."""
        import zarr

        status = zarr.open_array(self.path / "status", mode="r")
        return np.asarray(status[...]) == PENDING

    def write_chunk(self, index: np.ndarray, dataset) -> None:
        """Write a chunk's results for configurations `index` (sorted): one region
        per run of consecutive configurations (a chunk is one run unless a resumed
        store had a unit half finished)."""
        breaks = np.flatnonzero(np.diff(index) != 1) + 1
        for rows in np.split(np.arange(len(index)), breaks):
            lo, hi = int(index[rows[0]]), int(index[rows[-1]]) + 1
            self.write(lo, hi, dataset.isel(config=rows))

    def write(self, lo: int, hi: int, dataset) -> None:
        """Write configurations `lo:hi` into their region, the status last."""
        if not self.writer:
            return
        region = {"config": slice(lo, hi)}
        data = dataset.drop_vars(list(dataset.coords))
        with _quiet():
            # Every chunk written, fill values included: a missing chunk is damage.
            kw = dict(region=region, consolidated=False, write_empty_chunks=True)
            data.drop_vars("status").to_zarr(self.path, **kw)
            data[["status"]].to_zarr(self.path, **kw)

    def open(self):
        """The results, opened lazily."""
        import xarray as xr

        with _quiet():
            return xr.open_zarr(self.path)

    def _consolidate(self):
        import zarr

        with _quiet():
            zarr.consolidate_metadata(self.path)

    def close(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def _fill_value(dtype):
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.floating):
        return np.nan
    if dtype == np.bool_:
        return False
    return 0


@contextlib.contextmanager
def _quiet():
    # Consolidated metadata is not (yet) in the Zarr 3 specification; zarr-python and
    # xarray both read it, so its warning says nothing useful to our users.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        yield


def open_results(path, spelled=None):
    """A jaxmirror store's results, opened lazily once every chunk was read, or a
    `StoreError` (one line naming the file and the remedy) for a folder that is not
    one, or a store with damage (a missing chunk would read as NaN)."""
    import xarray as xr

    spelled = path if spelled is None else spelled
    path = pathlib.Path(path).expanduser().resolve()
    if not path.is_dir():
        raise StoreError(f"{spelled}: no sweep results here (not a directory).")
    contents = inspect(path, spelled)
    if not contents.finished_creating:
        raise StoreError(
            f"{spelled}: no sweep results here (run `jaxmirror sweep CONFIG --out "
            f"{spelled}` first, with --resume if it was interrupted)."
        )
    report = scan(path, full=True)
    if not report.healthy:
        raise StoreError(
            f"{spelled} is damaged: {report.problems[0]} Run `jaxmirror check "
            f"{spelled}` to list what is damaged."
        )
    with _quiet():
        return xr.open_zarr(path)
