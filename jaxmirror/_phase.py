"""Phase diagrams of a sweep: a variable over one or two schedule parameters."""

import pathlib

import numpy as np


def _on_grid(dataset, x, y, name):
    """`name` on the (y, x) grid of the sweep."""
    xs, ys = np.unique(dataset[x].values), np.unique(dataset[y].values)
    grid = np.full((len(ys), len(xs)), np.nan)
    ix = np.searchsorted(xs, dataset[x].values)
    iy = np.searchsorted(ys, dataset[y].values)
    grid[iy, ix] = dataset[name].values
    return grid


def _norm(panels):
    import matplotlib

    values = np.concatenate([np.ravel(p) for _, p in panels])
    values = values[np.isfinite(values)]
    if values.size and np.all(values > 0):
        return matplotlib.colors.LogNorm(values.min(), values.max())
    if values.size:
        return matplotlib.colors.Normalize(values.min(), values.max())
    return matplotlib.colors.Normalize(0.0, 1.0)


def _flags(dataset):
    """Masks of configurations that failed, and that succeeded without converging."""
    status = np.asarray(dataset.status.values)
    failed = status != 0
    unconverged = ~failed
    if "converged" in dataset.variables:
        unconverged &= ~np.asarray(dataset.converged.values, dtype=bool)
    else:
        unconverged &= False
    return failed, unconverged


def _mark(ax, xv, yv, failed, unconverged):
    if failed.any():
        ax.scatter(xv[failed], yv[failed], marker="x", c="red", s=30, label="failed")
    if unconverged.any():
        ax.scatter(
            xv[unconverged],
            yv[unconverged],
            marker="o",
            facecolors="none",
            edgecolors="orange",
            s=30,
            label="not converged at t1",
        )


def _curve(dataset, axis, variable, ax):
    """One-dimensional sweeps: the variable against the one varying parameter."""
    order = np.argsort(dataset[axis].values)
    xv = dataset[axis].values[order]
    ax.plot(xv, dataset[variable].values[order], "o-", label="simulated (solve)")
    predicted = f"predicted_{variable}"
    if predicted in dataset.variables:
        ax.plot(xv, dataset[predicted].values[order], "--", label="predicted")
    failed, unconverged = (m[order] for m in _flags(dataset))
    _mark(ax, xv, dataset[variable].values[order], failed, unconverged)
    values = dataset[variable].values
    if np.all(np.isfinite(values) & (values > 0)):
        ax.set_yscale("log")
    ax.set_xlabel(axis)
    ax.set_ylabel(variable)
    ax.legend(fontsize=8)


def phase_diagram(
    dataset, x="t_off", y="alpha", variable="recovery_error", threshold=None, path=None
):
    """Plot `variable` over the (x, y) grid of a sweep, simulated and, where the sweep
    has them, predicted side by side, with the predicted boundary
    `predicted_<variable> = threshold` drawn on both (default threshold: the geometric
    mean of the predicted range). Failed configurations are marked with a red cross,
    and those that did not reach their limit by t1 (`converged` false) with an orange
    circle. A sweep with one value on an axis is drawn as a curve.

    Returns the matplotlib figure (saved to `path` if given).
    """
    # pyplot with the backend the session chose (inline in a notebook; matplotlib
    # falls back to Agg where there is no display): forcing Agg here would turn off
    # a notebook's inline figures for the rest of the session.
    import matplotlib.pyplot as plt

    for name in (x, y, variable, "status"):
        if name not in dataset.variables:
            raise ValueError(
                f"the sweep has no `{name}`; available: {sorted(dataset.variables)}."
            )
    dataset = dataset.load()
    xs, ys = np.unique(dataset[x].values), np.unique(dataset[y].values)
    if len(xs) * len(ys) != dataset.sizes["config"]:
        raise ValueError(
            f"`{x}` and `{y}` do not form a full grid over the {dataset.sizes['config']} "
            "configurations."
        )
    if len(xs) == 1 or len(ys) == 1:
        fig, ax = plt.subplots(figsize=(6, 4.4), constrained_layout=True)
        _curve(dataset, x if len(xs) > 1 or len(ys) == 1 else y, variable, ax)
    else:
        fig = _panels(plt, dataset, x, y, xs, ys, variable, threshold)
    if path is not None:
        fig.savefig(pathlib.Path(path), dpi=120)
    return fig


def _panels(plt, dataset, x, y, xs, ys, variable, threshold):
    panels = [("simulated (solve)", _on_grid(dataset, x, y, variable))]
    predicted = None
    if f"predicted_{variable}" in dataset.variables:
        predicted = _on_grid(dataset, x, y, f"predicted_{variable}")
        panels.append(("predicted (implicit_bias)", predicted))
    if threshold is None and predicted is not None:
        good = predicted[np.isfinite(predicted) & (predicted > 0)]
        threshold = float(np.sqrt(good.min() * good.max())) if good.size else None
    norm = _norm(panels)
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(5.5 * len(panels), 4.4),
        constrained_layout=True,
        squeeze=False,
    )
    failed, unconverged = _flags(dataset)
    for i, (ax, (title, grid)) in enumerate(zip(axes[0], panels)):
        mesh = ax.pcolormesh(xs, ys, grid, shading="nearest", norm=norm, cmap="viridis")
        if predicted is not None and threshold is not None:
            contour = ax.contour(
                xs, ys, predicted, levels=[threshold], colors="w", linewidths=1.5
            )
            ax.clabel(contour, fmt=lambda v: f"predicted = {v:.2g}", fontsize=8)
        if i == 0:  # the flags describe the simulated flows
            _mark(ax, dataset[x].values, dataset[y].values, failed, unconverged)
            if failed.any() or unconverged.any():
                ax.legend(fontsize=7, loc="upper right")
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{variable}: {title}", fontsize=10)
        fig.colorbar(mesh, ax=ax, label=variable)
    return fig
