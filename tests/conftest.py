"""Test configuration: float64 everywhere (gradient tests use rtol 1e-10) and strict rank promotion."""

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
