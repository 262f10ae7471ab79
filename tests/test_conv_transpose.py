"""conv_transpose2d: the adjoint of a strided convolution, tap by tap, against XLA and the oracle."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.core import init_params
from jaxscratch.ops.conv_transpose import conv_transpose2d
from jaxscratch.oracle.check import check_op


@pytest.mark.parametrize(("k", "s", "p"), [(3, 2, 1), (2, 1, 0)])
def test_forward_is_the_adjoint_of_a_strided_convolution(k, s, p):
    """<conv_transpose(x), y> == <x, conv(y)> with conv the strided correlation of the same
    kernel (the defining identity), and the output size is (H - 1) s + k - 2p."""
    key = jax.random.key(k * 10 + s)
    op = conv_transpose2d(2, k, stride=s, padding=p)
    params = init_params(op, key, (3, 4, 5))[1]
    x = jax.random.normal(jax.random.fold_in(key, 1), (2, 3, 4, 5), jnp.float64)
    y, _ = op.forward(params, x)
    assert y.shape == (2, 2, 3 * s + k - 2 * p, 4 * s + k - 2 * p)
    r = jax.random.normal(jax.random.fold_in(key, 2), y.shape, jnp.float64)
    # conv(r): the strided correlation of r (padded back by p) with W as an (in=o, out=i) kernel
    Wc = jnp.transpose(params["W"], (1, 0, 2, 3))  # (C_out, C_in, k, k) -> as lhs channels o
    rp = jnp.pad(r, ((0, 0), (0, 0), (p, p), (p, p)))
    conv_r = jax.lax.conv_general_dilated(
        rp, jnp.transpose(Wc, (1, 0, 2, 3)), (s, s), "VALID",
        dimension_numbers=("NCHW", "OIHW", "NCHW"),
    )[:, :, :4, :5]  # fmt: skip
    np.testing.assert_allclose(jnp.vdot(y, r), jnp.vdot(x, conv_r), rtol=1e-12)


# the oracle check of conv_transpose2d is the registry sweep's (tests/test_oracle.py:
# conv_transpose2d[k3,s2,p1,bias] and conv_transpose2d[k2])


def test_a_backward_without_overlap_accumulation_is_caught():
    """dx from the first tap only (a backward that forgets the other k*k - 1 copies) fails."""
    op = conv_transpose2d(2, 3, stride=2, padding=1)
    params = init_params(op, jax.random.key(0), (3, 4, 5))[1]
    x = jax.random.normal(jax.random.key(1), (2, 3, 4, 5), jnp.float64)

    def backward(cache, dy):
        grads, _ = op.backward(cache, dy)
        xx, W = cache
        g = jnp.pad(dy, ((0, 0), (0, 0), (1, 1), (1, 1)))[:, :, 0:7:2, 0:9:2]
        return grads, jnp.einsum("nohw,io->nihw", g, W[:, :, 0, 0])

    assert not check_op(op._replace(backward=backward), params, x).passed


def test_bad_input_is_named():
    """Channels that do not fit W; padding that leaves nothing; a bad stride."""
    op = conv_transpose2d(2, 3)
    params = init_params(op, jax.random.key(0), (3, 4, 5))[1]
    with pytest.raises(ValueError, match=r"x\(2, 4, 4, 5\) does not fit W\(3, 2, 3, 3\)"):
        op.forward(params, jnp.ones((2, 4, 4, 5)))
    with pytest.raises(ValueError, match="padding 3 leaves no output"):
        init_params(conv_transpose2d(2, 2, padding=3), jax.random.key(0), (1, 1, 1))
    with pytest.raises(ValueError, match="stride"):
        conv_transpose2d(2, 3, stride=0)
