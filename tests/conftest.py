import gc

import jax
import jax.random as jr
import pytest

import jaxmirror as jm


jax.config.update("jax_enable_x64", True)
# The suite is an entry point: it keeps compiled programs across its workers and runs
# (importing jaxmirror changes no JAX setting; see jaxmirror/_cache.py).
jm.enable_compilation_cache()
jax.config.update("jax_numpy_dtype_promotion", "strict")
jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def getkey():
    """A fresh PRNG key on each call, reproducible per test."""
    key = jr.PRNGKey(5678)

    def _getkey():
        nonlocal key
        key, sub = jr.split(key)
        return sub

    return _getkey


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Release every compiled program after each test module.

    Each XLA:CPU program maps its code into the process in many regions (a sweep's
    first call adds about 1,100). A pytest worker that kept every program of the suite
    passed the kernel's limit of 65,530 mappings (`vm.max_map_count`; measured:
    about 50,000 at two thirds of the suite) and then crashed with a segmentation
    fault while loading a program from the persistent cache. `jax.clear_caches()`
    unmaps them (2,287 mappings down to 899, measured); the next module reloads what
    it needs from the persistent cache.
    """
    yield
    jax.clear_caches()
    gc.collect()
