"""Time spent compiling, measured apart from time spent running.

JAX reports every tracing, lowering and backend compilation as a duration event
(`jax.monitoring`); `CompileTimer` sums those that happen inside a `with` block. A
sweep uses it to size its chunks from run time alone, and the benchmarks to report
compilation separately.
"""

import threading

import jax


_EVENT_PREFIX = "/jax/core/compile/"
_active: list["CompileTimer"] = []  # the timers inside their `with` blocks
_lock = threading.Lock()
_listening = False


def _dispatch(event: str, duration: float, **kwargs) -> None:
    for timer in list(_active):
        timer._listen(event, duration)


def _listen_once() -> None:
    """One listener for the process, registered on first use: JAX before 0.6 cannot
    unregister a listener, so timers come and go from `_active` instead."""
    global _listening
    with _lock:
        if not _listening:
            jax.monitoring.register_event_duration_secs_listener(_dispatch)
            _listening = True


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

    def _listen(self, event: str, duration: float) -> None:
        if event.startswith(_EVENT_PREFIX):
            self.seconds += duration
            if event == _EVENT_PREFIX + "backend_compile_duration":
                self.backend_seconds += duration

    def __enter__(self) -> "CompileTimer":
        _listen_once()
        _active.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _active.remove(self)
