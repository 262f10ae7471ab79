"""Test configuration: float64 everywhere (gradient tests use rtol 1e-10) and strict rank promotion.

The suite compiles with XLA's CPU backend (LLVM) at -O0: a quarter of the suite's time was
compiling thousands of small programs, and what the tests assert (gradients against the oracle,
bitwise resume, run-to-run equality) does not depend on how hard LLVM optimises the machine code
(the HLO passes run as usual; the whole suite passes at either level). Float32 results may differ
from an optimised build in the last bits. ``JAXSCRATCH_TEST_OPT=full`` runs the suite at XLA's
default level; an ``xla_backend_optimization_level`` already in ``XLA_FLAGS`` is left alone.
"""

import os

if os.environ.get("JAXSCRATCH_TEST_OPT", "") != "full":
    _flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in _flags:  # read when the CPU backend starts
        os.environ["XLA_FLAGS"] = f"{_flags} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402

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
os.environ["JAXSCRATCH_COMPILE_CACHE"] = "off"
