"""Test helper: JAX's persistent compilation cache, scoped to a block (tests only)."""

import contextlib

import jax
from jax.experimental.compilation_cache import compilation_cache as cc


@contextlib.contextmanager
def compile_cache(path):
    """Caches compiled programs under `path` inside the block, restoring the settings after.

    Simulations that compile to the same program (a fresh same-seed run, a resumed run) load
    it instead of recompiling; the cached program is the same one, so results do not change.
    """
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    old = {k: getattr(jax.config, k) for k in names}
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    cc.reset_cache()
    try:
        yield
    finally:
        for k, v in old.items():
            jax.config.update(k, v)
        cc.reset_cache()
