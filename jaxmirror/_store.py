"""Where a sweep's results live on disk: chunk files, the configuration, resume.

Storage is kept apart from the numerics (`_sweep.py`): a sweep hands each finished
chunk to its `SweepStore`, which writes it atomically, and asks it which chunks a
resumed sweep has already finished.
"""

import json
import os
import pathlib

import jax


def _atomic_write(dataset, path: pathlib.Path):
    tmp = path.with_suffix(path.suffix + ".tmp")
    dataset.to_netcdf(tmp, engine="scipy")
    os.replace(tmp, path)  # a crash leaves no half-written chunk under the final name


class SweepStore:
    """The output directory of one sweep: `config.json`, `chunks/`, `results.nc`.

    Only process 0 writes (several hosts share one result).
    """

    def __init__(self, out, record: dict, resume: bool):
        self.out = pathlib.Path(out)
        self.writer = jax.process_index() == 0
        self.resume = resume
        (self.out / "chunks").mkdir(parents=True, exist_ok=True)
        config_path = self.out / "config.json"
        if config_path.exists():
            if not resume:
                raise ValueError(
                    f"`out`: {self.out} already holds a sweep; pass resume=True to "
                    "continue it, or choose another directory."
                )
            previous = json.loads(config_path.read_text())
            if previous != record:
                changed = sorted(k for k in record if previous.get(k) != record[k])
                raise ValueError(
                    f"`resume`: the sweep in {self.out} has another configuration "
                    f"(differs in {changed})."
                )
        elif self.writer:
            config_path.write_text(json.dumps(record, indent=2))

    def _chunk_path(self, index: int) -> pathlib.Path:
        return self.out / "chunks" / f"chunk_{index:06d}.nc"

    def finished_chunk(self, index: int):
        """The dataset of chunk `index` if a resumed sweep already finished it."""
        import xarray as xr

        path = self._chunk_path(index)
        if self.resume and path.exists():
            return xr.load_dataset(path, engine="scipy")
        return None

    def write_chunk(self, index: int, dataset) -> None:
        if self.writer:
            _atomic_write(dataset, self._chunk_path(index))

    def write_result(self, dataset) -> None:
        if self.writer:
            _atomic_write(dataset, self.out / "results.nc")
