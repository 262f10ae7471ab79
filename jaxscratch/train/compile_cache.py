"""The persistent compilation cache: a second run of the same program loads, not compiles.

The library never turns it on by itself; the ``jaxscratch`` command and the experiments do
(:func:`cache_from_env`), in the per-user cache directory, unless ``JAXSCRATCH_COMPILE_CACHE``
says otherwise: ``off`` (or ``0``, ``false``, ``no``) turns it off, a path puts it there.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxscratch/xla`` (default ``~/.cache/jaxscratch/xla``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jaxscratch" / "xla"


def enable_compilation_cache(directory: str | Path | None = None) -> Path:
    """Opt in to JAX's persistent compilation cache, so a second run of the same program loads
    its compiled executables instead of compiling them (compilation dominates short runs).

    ``directory`` defaults to :func:`default_cache_dir` (a per-user cache directory; nothing is
    written anywhere else). Every program is cached, however quickly it compiled. Global: it
    sets ``jax_compilation_cache_dir`` for the whole process. Returns the directory.
    """
    path = Path(directory) if directory is not None else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


ENV = "JAXSCRATCH_COMPILE_CACHE"
_OFF = ("off", "0", "false", "no")


def cache_from_env() -> Path | None:
    """Enable the cache as ``$JAXSCRATCH_COMPILE_CACHE`` says (unset or empty: the default
    directory; ``off``/``0``/``false``/``no``: not at all; anything else: that directory).
    Returns the directory, or None when off or when the directory cannot be created (a
    read-only home must not stop a run: the cache is only a speed-up)."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in _OFF:
        return None
    try:
        return enable_compilation_cache(value or None)
    except OSError:
        return None
