"""The sweep wing: many flows at once, sharded, stored chunk by chunk, resumable.

- `_api.py`: `sweep` and `grid`, and the data flow from a call to a chunk;
- `_options.py`: `SweepOptions`, one typed record of every option;
- `_inputs.py`: the inputs checked, and which carry the configuration axis;
- `_plan.py`: every choice made before the first chunk, as one `Plan`;
- `_strategies.py`: how a chunk is solved (vmap, batched, kernel), and their registry;
- `_chunks.py`: chunk sizing, the chunk loop and progress;
- `_predictions.py`: convergence, predicted limits and losses per chunk;
- `_results.py`: the dataset, its attributes and the resume fingerprint;
- `_store.py`: the Zarr store, its lock and fingerprint check;
- `_threads.py`: every CPU core (host threads, or one device per core);
- `_compile_time.py`: compilation time measured apart from running time.
"""

from ._api import grid as grid, sweep as sweep
from ._options import SweepOptions as SweepOptions
from ._plan import SWEEP_TOLERANCES as SWEEP_TOLERANCES
from ._strategies import CHOICES as CHOICES, STRATEGIES as STRATEGIES
from ._threads import use_all_cores as use_all_cores
