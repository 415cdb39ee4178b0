r"""What a folder holds, before a sweep writes into it or a command reads it.

Two rules keep a user's files and results safe:

- **A store only replaces what it created.** A sweep writes into a path that does not
  exist, an empty directory, or a jaxmirror store, recognised by its marker (the
  root attribute `jaxmirror_store`; stores of earlier versions by their
  fingerprint). Anything else is refused with one line naming the path, before
  anything is touched.
- **A damaged store is never new.** A store whose root metadata is missing (a
  partial copy) or unreadable (a truncated file), whose arrays' metadata cannot be
  read, or whose chunks are missing or do not decode, is refused by a sweep, a
  resume, `plot` and `export`, with one line naming the file and the remedy.
  `jaxmirror check STORE` (`scan(path, full=True)`) reads every chunk and lists
  what is damaged; a resume recomputes damaged configurations only when asked to
  (`repair=True`, `--repair`).

Every chunk of a store of this format is written, fill values included (Zarr skips
chunks that hold only the fill value by default), so a missing chunk is damage, not
an all-`False` block of `converged`.
"""

import dataclasses
import json
import pathlib

import numpy as np


MARKER = "jaxmirror_store"
FORMAT = 1  # every chunk written (a missing chunk is damage)
FINGERPRINT = "jaxmirror_fingerprint"
PENDING = -1  # the status of a configuration not computed yet
# The variables a sweep writes: a folder holding one of them is a store's remains.
VARIABLES = (
    "status",
    "x_final",
    "loss",
    "converged",
    "distance_to_limit",
    "num_steps",
    "x_predicted",
    "bias_status",
)


class StoreError(ValueError):
    """A folder a sweep may not use, or a damaged store (one line: the file, the
    reason, the remedy)."""


class DamagedStoreError(StoreError):
    """A jaxmirror store whose metadata or chunks cannot be read."""


@dataclasses.dataclass
class Contents:
    """What a sweep's `out` holds: nothing yet (`attrs` None), or a jaxmirror store."""

    attrs: dict | None

    @property
    def finished_creating(self) -> bool:
        """Whether the store was laid out whole (its fingerprint is written last)."""
        return self.attrs is not None and FINGERPRINT in self.attrs


def read_metadata(path: pathlib.Path) -> dict:
    """A Zarr metadata file as a mapping, or a `StoreError` naming it."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise StoreError(f"{path} is missing.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        reason = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
        raise StoreError(f"{path} is unreadable ({reason}).") from None
    if not isinstance(data, dict):
        raise StoreError(f"{path} is unreadable (not a JSON object).")
    return data


def _damaged(spelled, what: str) -> StoreError:
    return DamagedStoreError(
        f"{spelled} is a damaged jaxmirror store: {what} Restore it from where it was "
        f"copied, or run `jaxmirror check {spelled}` to list what is damaged; nothing "
        "was changed."
    )


def inspect(path: pathlib.Path, spelled) -> Contents:
    """What `path` (as the user spelled it: `spelled`) holds, or a `StoreError` for a
    folder no sweep may write into (module docstring)."""
    if not path.exists():
        return Contents(None)
    if not path.is_dir():
        raise StoreError(f"`out`: {spelled} is a file; expected a directory.")
    if not any(path.iterdir()):
        return Contents(None)
    root = path / "zarr.json"
    if not root.exists():
        if any((path / name / "zarr.json").is_file() for name in VARIABLES):
            raise _damaged(spelled, f"its root metadata {root} is missing.")
        raise StoreError(
            f"`out`: {spelled} is neither empty nor a jaxmirror sweep store; a sweep "
            "writes only into a new or empty directory, or into a store it created. "
            "Nothing was changed; choose another directory."
        )
    try:
        attrs = read_metadata(root).get("attributes", {})
    except StoreError as error:
        raise _damaged(spelled, str(error)) from None
    if not isinstance(attrs, dict) or not (MARKER in attrs or FINGERPRINT in attrs):
        raise StoreError(
            f"`out`: {spelled} holds a Zarr store that jaxmirror did not create; a "
            "sweep replaces only its own stores. Nothing was changed; choose another "
            "directory."
        )
    return Contents(attrs)


@dataclasses.dataclass
class Report:
    """What `scan` found."""

    configurations: int = 0
    pending: int = 0
    problems: list = dataclasses.field(default_factory=list)  # one line each
    damaged: set = dataclasses.field(default_factory=set)  # configuration indices

    @property
    def healthy(self) -> bool:
        return not self.problems


def _arrays(path: pathlib.Path, root_metadata: dict, report: Report) -> list[str]:
    """The store's arrays along `config` whose metadata can be read."""
    names = [p.name for p in sorted(path.iterdir()) if (p / "zarr.json").exists()]
    listed = root_metadata.get("consolidated_metadata") or {}
    names = sorted(set(names) | set(listed.get("metadata", {})))
    readable = []
    for name in names:
        try:
            meta = read_metadata(path / name / "zarr.json")
        except StoreError as error:
            report.problems.append(f"{name}: {error}")
            continue
        if "config" in (meta.get("dimension_names") or [])[:1]:
            readable.append(name)
    return readable


def scan(path: pathlib.Path, full: bool) -> Report:
    """Check a store: its metadata and status (`full=False`, what a resume needs), or
    every chunk of every variable (`full=True`, `jaxmirror check`).

    A missing chunk is damage where its configurations are done (status not
    pending); a status chunk that does not decode damages its configurations.
    """
    import zarr

    report = Report()
    root_metadata = read_metadata(path / "zarr.json")
    names = _arrays(path, root_metadata, report)
    if "status" not in names:
        report.problems.append(f"status: {path / 'status' / 'zarr.json'} is missing.")
        return report
    status_array = zarr.open_array(path / "status", mode="r")
    unit = status_array.chunks[0]
    size = report.configurations = status_array.shape[0]
    status = np.full(size, PENDING)
    for block in range(-(-size // unit)):
        rows = slice(block * unit, min(size, (block + 1) * unit))
        try:
            status[rows] = status_array[rows]
        except Exception as error:  # noqa: BLE001 - any decoding failure is damage
            report.problems.append(
                _chunk_line(path, status_array, "status", block, error)
            )
            report.damaged.update(range(rows.start, rows.stop))
    done = status != PENDING
    report.pending = int(np.sum(~done))
    for name in names if full else ():
        if name != "status":
            _scan_variable(path, name, done, report)
    return report


def _chunk_line(path, array, name, block, error) -> str:
    key = array.metadata.encode_chunk_key((block,) + (0,) * (array.ndim - 1))
    reason = f"{type(error).__name__}: {str(error).splitlines()[0][:100]}"
    return f"{name}: chunk {path / name / key} does not decode ({reason})."


def _scan_variable(path, name, done, report: Report) -> None:
    import zarr

    array = zarr.open_array(path / name, mode="r")
    size, unit = array.shape[0], array.chunks[0]
    for block in range(-(-size // unit)):
        rows = range(block * unit, min(size, (block + 1) * unit))
        finished = [i for i in rows if done[i]]
        key = array.metadata.encode_chunk_key((block,) + (0,) * (array.ndim - 1))
        if not (path / name / key).exists():
            if finished:
                report.problems.append(
                    f"{name}: chunk {path / name / key} is missing "
                    f"(configurations {rows.start}-{rows.stop - 1})."
                )
                report.damaged.update(finished)
            continue
        try:
            array.blocks[block]
        except Exception as error:  # noqa: BLE001 - any decoding failure is damage
            report.problems.append(_chunk_line(path, array, name, block, error))
            report.damaged.update(rows)
