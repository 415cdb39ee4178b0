"""Phase diagrams of a saved sweep: recovery error over two schedule parameters."""

import pathlib

import numpy as np


def phase_diagram(
    dataset, x="t_off", y="alpha", variable="recovery_error", threshold=None, path=None
):
    """Plot `variable` over the (x, y) grid of a sweep: simulated and, where the sweep
    has them, predicted values side by side, with the predicted boundary
    `predicted_<variable> = threshold` drawn on both (default threshold: the geometric
    mean of the predicted range).

    Returns the matplotlib figure (saved to `path` if given).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name in (x, y, variable):
        if name not in dataset.variables:
            raise ValueError(
                f"the sweep has no `{name}`; available: {sorted(dataset.variables)}."
            )
    xs = np.unique(dataset[x].values)
    ys = np.unique(dataset[y].values)
    if len(xs) * len(ys) != dataset.sizes["config"]:
        raise ValueError(
            f"`{x}` and `{y}` do not form a full grid over the {dataset.sizes['config']} "
            "configurations."
        )

    def field(name):
        grid = np.full((len(ys), len(xs)), np.nan)
        ix = np.searchsorted(xs, dataset[x].values)
        iy = np.searchsorted(ys, dataset[y].values)
        grid[iy, ix] = dataset[name].values
        return grid

    simulated = field(variable)
    predicted_name = f"predicted_{variable}"
    panels = [("simulated (solve)", simulated)]
    predicted = None
    if predicted_name in dataset.variables:
        predicted = field(predicted_name)
        panels.append(("predicted (implicit_bias)", predicted))
    values = np.concatenate([p[np.isfinite(p) & (p > 0)] for _, p in panels])
    vmin, vmax = values.min(), values.max()
    if threshold is None and predicted is not None:
        good = predicted[np.isfinite(predicted) & (predicted > 0)]
        threshold = float(np.sqrt(good.min() * good.max()))
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(5.5 * len(panels), 4.4),
        constrained_layout=True,
        squeeze=False,
    )
    for ax, (title, grid) in zip(axes[0], panels):
        mesh = ax.pcolormesh(
            xs,
            ys,
            grid,
            shading="nearest",
            norm=matplotlib.colors.LogNorm(vmin, vmax),
            cmap="viridis",
        )
        if predicted is not None and threshold is not None:
            contour = ax.contour(
                xs, ys, predicted, levels=[threshold], colors="w", linewidths=1.5
            )
            ax.clabel(contour, fmt=lambda v: f"predicted = {v:.2g}", fontsize=8)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{variable}: {title}", fontsize=10)
        fig.colorbar(mesh, ax=ax, label=variable)
    if path is not None:
        fig.savefig(pathlib.Path(path), dpi=120)
    return fig
