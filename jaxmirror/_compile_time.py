"""Time spent compiling, measured apart from time spent running.

JAX reports every tracing, lowering and backend compilation as a duration event
(`jax.monitoring`); `CompileTimer` sums those that happen inside a `with` block. A
sweep uses it to size its chunks from run time alone, and the benchmarks to report
compilation separately.
"""

import jax


_EVENT_PREFIX = "/jax/core/compile/"


class CompileTimer:
    """Seconds spent compiling inside the `with` block (`.seconds`).

    ```python
    with CompileTimer() as timer:
        fn(x)
    timer.seconds
    ```
    """

    def __init__(self):
        self.seconds = 0.0
        # XLA's own compilation, the part the persistent cache saves (a cache hit
        # leaves tracing and lowering, which JAX redoes in every process).
        self.backend_seconds = 0.0

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if event.startswith(_EVENT_PREFIX):
            self.seconds += duration
            if event == _EVENT_PREFIX + "backend_compile_duration":
                self.backend_seconds += duration

    def __enter__(self) -> "CompileTimer":
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listen)
