"""Opt-in persistent compilation cache: a second run of the same program loads, not compiles."""

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
