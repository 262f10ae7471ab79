"""The persistent compilation cache: on by default for the CLI and experiments, in the user cache
directory, off with JAXSCRATCH_COMPILE_CACHE=off, elsewhere with a path; never fatal."""

from __future__ import annotations

import jax
import pytest

from jaxscratch.train import compile_cache


@pytest.fixture
def restore_jax_cache_config():
    old = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", old)


@pytest.mark.parametrize("value", ["off", "0", "False", " no "])
def test_off_turns_it_off(monkeypatch, restore_jax_cache_config, value):
    """Any of off/0/false/no (any case, spaces) leaves JAX's cache setting untouched."""
    monkeypatch.setenv(compile_cache.ENV, value)
    before = jax.config.jax_compilation_cache_dir
    assert compile_cache.cache_from_env() is None
    assert jax.config.jax_compilation_cache_dir == before


def test_a_path_puts_it_there_and_unset_means_the_user_cache(
    tmp_path, monkeypatch, restore_jax_cache_config
):
    """A path is created and used; unset uses $XDG_CACHE_HOME/jaxscratch/xla."""
    monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "here"))
    assert compile_cache.cache_from_env() == tmp_path / "here"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "here")
    monkeypatch.delenv(compile_cache.ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.cache_from_env() == tmp_path / "xdg" / "jaxscratch" / "xla"
    assert (tmp_path / "xdg" / "jaxscratch" / "xla").is_dir()


def test_a_directory_that_cannot_be_made_is_not_fatal(
    tmp_path, monkeypatch, restore_jax_cache_config
):
    """A cache path under a regular file: no cache, no error (it is only a speed-up)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv(compile_cache.ENV, str(blocker / "cache"))
    before = jax.config.jax_compilation_cache_dir
    assert compile_cache.cache_from_env() is None
    assert jax.config.jax_compilation_cache_dir == before
