r"""A sweep's results as a labelled `xarray.Dataset`, with its settings recorded.

The settings that determine the results are one list, the fields of the resolved
`SweepOptions` (`SweepOptions.determining`) and `t1`: the results' attributes show
them (objects by name) and the resume fingerprint digests them, so that the two never
disagree on what a sweep was run with.
"""

import dataclasses

import equinox as eqx
import jax
import numpy as np

from .._version import __version__
from ._store import fingerprint, variable_attributes


def schedule_coordinates(schedules) -> dict[str, np.ndarray]:
    """The schedule's per-configuration scalar parameters, named by field."""
    coords = {}
    for field in dataclasses.fields(schedules):
        value = getattr(schedules, field.name)
        if eqx.is_array(value) and value.ndim == 1:
            coords[field.name] = np.asarray(value)
    return coords


def to_dataset(part: dict, coords: dict, truth, index):
    """One chunk's results as a Dataset over its configurations `index`."""
    import xarray as xr

    data = {
        "x_final": (("config", "coord"), part["x_final"]),
        "loss": ("config", part["loss"]),
        "status": ("config", part["status"].astype(np.int32)),
        "converged": ("config", part["converged"].astype(bool)),
        "distance_to_limit": ("config", part["distance_to_limit"]),
        "num_steps": ("config", part["num_steps"].astype(np.int32)),
    }
    if "x_predicted" in part:
        data["x_predicted"] = (("config", "coord"), part["x_predicted"])
        data["bias_status"] = ("config", part["bias_status"].astype(np.int32))
    if truth is not None:
        target = truth if truth.ndim == 1 else truth[index]
        for name, x in (("", "x_final"), ("predicted_", "x_predicted")):
            if x in part:
                error = np.linalg.norm(part[x] - target, axis=1)
                data[f"{name}recovery_error"] = ("config", error)
    dataset = xr.Dataset(data, coords={"config": index})
    dataset = dataset.assign_coords(
        {k: ("config", np.asarray(v)[index]) for k, v in coords.items()}
    )
    for name, variable in dataset.variables.items():
        variable.attrs.update(variable_attributes(name))
    return dataset


def in_memory(parts: list, attrs: dict):
    """The chunks' datasets joined, with the sweep's attributes."""
    import xarray as xr

    result = xr.concat(parts, dim="config") if len(parts) > 1 else parts[0]
    result.attrs.update(attrs)
    return result


def _settings(plan) -> dict:
    """The one list of settings that determine a sweep's results."""
    return {**plan.options.determining(), "t1": float(plan.t1)}


def _shown(value):
    """A setting as an attribute (netCDF takes strings and numbers only)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float | str):
        return value
    if value is None:
        return "default"
    return getattr(value, "name", type(value).__name__)


def attributes(problem, pair, schedules, batch, plan) -> dict:
    """The sweep's settings and inputs, as the results' attributes."""
    return dict(
        jaxmirror_version=__version__,
        jax_version=jax.__version__,
        configurations=batch.size,
        pair=type(pair).__name__,
        schedule=type(schedules).__name__,
        problem=type(problem).__name__,
        w0_batched=int(batch.w0),
        problem_batched=int(batch.problem),
        **{name: _shown(value) for name, value in _settings(plan).items()},
        prediction=plan.prediction_note,
        grid_view="ds.set_index(config=[<schedule parameters>]).unstack('config')",
    )


def fingerprint_of(inputs, truth, labels, plan) -> dict[str, str]:
    """A digest per input and per setting that determines the results."""
    data = dict(zip(("problem", "pair", "schedules", "w0"), inputs))
    return fingerprint({**data, "truth": truth, "labels": labels}, _settings(plan))
