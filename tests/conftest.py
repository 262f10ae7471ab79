"""Test configuration: float64 everywhere (gradient tests use rtol 1e-10) and strict rank promotion."""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")


import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def clean_registry():
    """Undo the test's registrations and the plugin modules it imported, so no later test (the
    registry-wide oracle and mutant checks) sees them."""
    from jaxscratch import core

    ops, losses, modules, path = (
        dict(core._REGISTRY),
        dict(core._LOSSES),
        set(sys.modules),
        list(sys.path),
    )
    yield
    core._REGISTRY.clear()
    core._REGISTRY.update(ops)
    core._LOSSES.clear()
    core._LOSSES.update(losses)
    installed = (sys.prefix, sys.base_prefix, str(Path(core.__file__).parent))
    for name in set(sys.modules) - modules:
        file = getattr(sys.modules[name], "__file__", None) or ""
        if file and not file.startswith(installed):  # a plugin, not jaxscratch or a library
            del sys.modules[name]
    sys.path[:] = path


# the CLI and the experiments turn on the persistent compilation cache; the suite (and every
# process it starts) leaves the user's cache directory alone
import os  # noqa: E402

os.environ["JAXSCRATCH_COMPILE_CACHE"] = "off"
