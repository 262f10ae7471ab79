"""The epoch's row order: ``jax.random.permutation(key, n)``, drawn the same, sorted faster.

``jax.random.permutation(key, n)`` sorts ``arange(n)`` by fresh random 32-bit keys, in
``ceil(3 ln n / ln(2^32 - 1))`` rounds (one up to n = 1625, two up to 2.6 million), each a
stable ``lax.sort_key_val``. XLA:CPU sorts a key-value pair through a comparator call per
comparison; one 64-bit key sorts about three times as fast (``experiments/benchmarks.py
--many`` measures both: 354 rows, Boston's training set, 15.8 us against 50.2 us; 60,000 rows,
the MNIST epoch, 6.8 ms against 26.6 ms). :func:`permutation`
therefore sorts, in each round, the one key ``bits << 32 | position``: the positions make every
key distinct and break ties between equal random bits exactly as a stable sort does, so the result
is the very permutation ``jax.random.permutation`` returns, element for element (tested for
every key kind, a range of ``n`` and both round counts). A run's batches, and every figure
trained with them, are unchanged by it.

Without ``jax_enable_x64`` there is no 64-bit integer to pack into, and :func:`permutation` calls
``jax.random.permutation`` itself.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.core import Array
from jaxscratch.validate import check_int


def _rounds(n: int) -> int:
    """The number of sorts ``jax.random.permutation`` makes for ``n`` elements."""
    return int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))


def permutation(key: Array, n: int) -> Array:
    """``jax.random.permutation(key, n)``: (n,) of the default integer dtype, the same elements.

    ``key``: a typed or raw PRNG key; ``n``: a static int >= 0. Traceable, and ``vmap`` over
    ``key`` batches the sorts.
    """
    n = check_int("permutation", "n", n, minimum=0)
    if jax.dtypes.canonicalize_dtype(np.uint64) != np.uint64 or n >= 2**32:
        return jax.random.permutation(key, n)
    return _packed(key, n)


@functools.partial(jax.jit, static_argnums=1)
def _packed(key: Array, n: int) -> Array:
    """The rounds of :func:`permutation`, one compiled call (traced: inlined in the caller)."""
    out_dtype = jnp.arange(0).dtype
    position = jnp.arange(n, dtype=jnp.uint64)
    low = jnp.uint64(0xFFFFFFFF)
    x = None
    for _ in range(_rounds(n)):
        key, sub = jax.random.split(key)
        bits = jax.random.bits(sub, (n,), jnp.uint32).astype(jnp.uint64)
        order = (jax.lax.sort((bits << jnp.uint64(32)) | position) & low).astype(out_dtype)
        x = order if x is None else x[order]
    return jnp.arange(n, dtype=out_dtype) if x is None else x
