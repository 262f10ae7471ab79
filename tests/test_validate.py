"""jaxscratch.validate: one set of argument checks, and every factory of ops/optim using it alike."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch import validate as V
from jaxscratch.ops import activations, conv, dense, dropout, pool, rnn
from jaxscratch.optim import clipping, optimizers, schedules


@pytest.mark.parametrize(
    "value, expected",
    [
        (1, True),
        (0.5, True),
        (np.float32(0.8), True),
        (np.int64(3), True),
        (np.array(2.0), True),
        (True, False),
        (np.bool_(True), False),
        ("1", False),
        (None, False),
        (np.ones(2), False),
        (1 + 2j, False),
    ],
)
def test_is_number(value, expected):
    assert V.is_number(value) is expected


def test_check_float_intervals_and_messages():
    assert V.check_float("f", "x", np.float32(0.5), minimum=0.0, maximum=1.0) == 0.5
    assert V.check_float("f", "x", 0, minimum=0.0) == 0.0
    with pytest.raises(ValueError, match=r"^f: x must be a finite number in \(0, 1\], got 0$"):
        V.check_float("f", "x", 0, minimum=0.0, maximum=1.0, low_open=True)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        V.check_float("f", "x", 1.0, minimum=0.0, maximum=1.0, high_open=True)
    with pytest.raises(ValueError, match="finite"):
        V.check_float("f", "x", float("nan"))
    with pytest.raises(TypeError, match=r"^f: x must be a number, got str '1'$"):
        V.check_float("f", "x", "1")
    with pytest.raises(TypeError, match="bool"):
        V.check_float("f", "x", True)


def test_check_positive_and_probability():
    assert V.check_positive("f", "eps", np.float64(1e-8)) == 1e-8
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="f: eps must be positive and finite"):
            V.check_positive("f", "eps", bad)
    assert V.check_probability("f", "p", 1) == 1.0
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        V.check_probability("f", "p", 0.0)


def test_check_int():
    assert V.check_int("f", "n", np.int32(3), minimum=1) == 3
    assert type(V.check_positive_int("f", "n", np.int64(2))) is int
    for bad in (2.0, True, "2", None):
        with pytest.raises(TypeError, match="f: n must be an integer"):
            V.check_int("f", "n", bad)
    with pytest.raises(ValueError, match=r"f: n must be an integer in \[1, inf\), got 0"):
        V.check_positive_int("f", "n", 0)
    with pytest.raises(ValueError, match=r"\[1, 7\]"):
        V.check_int("f", "n", 8, minimum=1, maximum=7)


def test_check_choice():
    assert V.check_choice("f", "mode", "b", ("a", "b")) == "b"
    with pytest.raises(ValueError, match="f: mode must be one of 'a', 'b', got 'c'"):
        V.check_choice("f", "mode", "c", ("a", "b"))
    with pytest.raises(TypeError, match="got int 1"):
        V.check_choice("f", "mode", 1, ("a", "b"))


def test_check_lr_passes_traced_values_and_checks_concrete_ones():
    assert V.check_lr("f", np.float32(0.5)) == 0.5
    assert V.check_lr("f", jnp.asarray(0.25)) == 0.25
    seen = []
    jax.jit(lambda lr: seen.append(V.check_lr("f", lr) is lr) or lr)(0.1)
    assert seen == [True]
    with pytest.raises(ValueError, match="f: learning rate must be a finite number in"):
        V.check_lr("f", 0.0)
    with pytest.raises(TypeError, match="f: learning rate must be a number"):
        V.check_lr("f", "0.1")


# Every factory refuses the same bad values with the same exception type, naming itself.
FACTORIES = [
    ("dense", lambda v: dense.dense(4, dropout=v)),
    ("conv_layer", lambda v: conv.conv_layer(4, 3, dropout=v)),
    ("dropout", lambda v: dropout.dropout(v)),
    ("sgd_momentum", lambda v: optimizers.sgd_momentum(v)),
    ("adam", lambda v: optimizers.adam(b1=v)),
    ("rmsprop", lambda v: optimizers.rmsprop(rho=v)),
    ("leaky_relu", lambda v: activations.make_leaky_relu(v)),
    ("clip_elementwise", lambda v: clipping.clip_elementwise(optimizers.sgd(), v)),
    ("linear_decay", lambda v: schedules.linear_decay(v, 0.01, 5)),
]


@pytest.mark.parametrize("fn, make", FACTORIES, ids=[f for f, _ in FACTORIES])
@pytest.mark.parametrize(
    "bad, exc",
    [("0.5", TypeError), (True, TypeError), (float("nan"), ValueError)],
)
def test_factories_refuse_alike(fn, make, bad, exc):
    with pytest.raises(exc, match=f"^{fn}: "):
        make(bad)


@pytest.mark.parametrize("fn, make", FACTORIES, ids=[f for f, _ in FACTORIES])
def test_factories_accept_numpy_scalars_as_numbers(fn, make):
    assert make(np.float32(0.5)) is not None


def test_no_dropout_is_none_or_one_in_dense_and_conv_layer():
    assert (
        dense.dense(4, dropout=None).name == dense.dense(4, dropout=1.0).name == "dense[4,linear]"
    )
    plain = conv.conv_layer(4, 3).name
    assert (
        conv.conv_layer(4, 3, dropout=None).name == conv.conv_layer(4, 3, dropout=1).name == plain
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda v: dense.dense(v),
        lambda v: conv.conv2d(v, 3),
        lambda v: conv.conv2d(4, v),
        lambda v: pool.make_max_pool2d(v),
        lambda v: rnn.rnn_layer(v, 3),
    ],
)
def test_sizes_are_integers_everywhere(make):
    assert make(np.int64(2)) is not None
    with pytest.raises(TypeError, match="must be an integer"):
        make(2.0)
    with pytest.raises(ValueError, match="must be an integer in"):
        make(0)
