"""jaxscratch.train.shuffle.permutation is jax.random.permutation, element for element."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.train.shuffle import _rounds, permutation

KEYS = {
    "threefry typed": lambda s: jax.random.key(s),
    "raw uint32": lambda s: jax.random.PRNGKey(s),
    "rbg typed": lambda s: jax.random.key(s, impl="rbg"),
}


@pytest.mark.parametrize("kind", list(KEYS))
@pytest.mark.parametrize("n", [0, 1, 2, 3, 354, 1625, 1626, 5000])
def test_it_is_jax_random_permutation(kind: str, n: int) -> None:
    for seed in range(3):
        key = KEYS[kind](seed)
        ours, theirs = permutation(key, n), jax.random.permutation(key, n)
        assert ours.dtype == theirs.dtype and ours.shape == (n,)
        np.testing.assert_array_equal(ours, theirs)


def test_round_counts_are_jaxs() -> None:
    """One sort up to 1625 rows, two from 1626 (the n above straddle it), three past 2.6e6."""
    assert [_rounds(n) for n in (0, 1, 1625, 1626, 2_642_245, 2_642_246)] == [0, 0, 1, 2, 2, 3]


def test_under_jit_and_vmap_and_fold_in() -> None:
    """As fit draws it: a fold_in key per epoch, inside jit, and vmapped over 16 runs' keys."""
    keys = jax.random.split(jax.random.key(7), 16)
    draw = lambda k: permutation(jax.random.fold_in(k, 3), 354)  # noqa: E731
    ref = jax.vmap(lambda k: jax.random.permutation(jax.random.fold_in(k, 3), 354))(keys)
    np.testing.assert_array_equal(jax.jit(jax.vmap(draw))(keys), ref)


def test_sixty_thousand_rows_two_rounds() -> None:
    """The MNIST epoch: two sorts, the second applied to the first's result."""
    key = jax.random.key(11)
    np.testing.assert_array_equal(permutation(key, 60000), jax.random.permutation(key, 60000))


def test_ties_between_random_bits_keep_the_stable_order() -> None:
    """Equal random bits are where a packed key could differ from a key-value sort: the packed
    position must order them as the stable sort does. Force ties: 2-bit keys over 50 rows."""
    bits = jnp.asarray(np.random.default_rng(0).integers(0, 4, 50), jnp.uint64)
    packed = (
        jax.lax.sort((bits << jnp.uint64(32)) | jnp.arange(50, dtype=jnp.uint64))
    ) & 0xFFFFFFFF
    _, stable = jax.lax.sort_key_val(bits.astype(jnp.uint32), jnp.arange(50))
    np.testing.assert_array_equal(packed, stable)


@pytest.mark.parametrize("n", [2.0, True, "3", np.float64(4.0)])
def test_an_n_that_is_no_int_is_a_type_error(n) -> None:
    with pytest.raises(TypeError, match="permutation: n must be an integer, got"):
        permutation(jax.random.key(0), n)


def test_a_negative_n_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"permutation: n must be an integer in \[0, .*got -1"):
        permutation(jax.random.key(0), -1)


@pytest.mark.subprocess
def test_without_x64_it_is_still_jax_random_permutation() -> None:
    """No 64-bit integers to pack into: the fallback is jax.random.permutation itself."""
    code = (
        "import jax, numpy as np\n"
        "from jaxscratch.train.shuffle import permutation\n"
        "assert not jax.config.jax_enable_x64\n"
        "for n in (354, 5000):\n"
        "    k = jax.random.key(3)\n"
        "    np.testing.assert_array_equal(permutation(k, n), jax.random.permutation(k, n))\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
