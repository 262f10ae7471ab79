"""Learning-rate schedules: the book's linear and exponential decay by hand, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxscratch.optim.schedules import Schedule, constant, exponential_decay, linear_decay


def test_linear_decay_values():
    s = linear_decay(0.15, 0.05, 3)
    assert s.values() == pytest.approx([0.15, 0.10, 0.05], rel=1e-15)
    s5 = linear_decay(0.15, 0.05, 5)
    assert s5.values() == pytest.approx([0.15, 0.125, 0.10, 0.075, 0.05], rel=1e-15)
    assert isinstance(s, Schedule) and s(0) == 0.15 and s(2) == pytest.approx(0.05, rel=1e-15)


def test_exponential_decay_values():
    s = exponential_decay(0.2, 0.05, 3)
    assert s.values() == pytest.approx([0.2, 0.1, 0.05], rel=1e-15)
    # over 5 epochs the factor is 0.25 ** 0.25 = 1/sqrt(2)
    r = 1 / math.sqrt(2)
    want = [0.2, 0.2 * r, 0.1, 0.1 * r, 0.05]
    assert exponential_decay(0.2, 0.05, 5).values() == pytest.approx(want, rel=1e-14)


def test_book_iterative_decay_matches_closed_form():
    """The book decays once per epoch (lr -= step; lr *= factor); the closed form agrees."""
    epochs = 50
    lin, expo = linear_decay(0.15, 0.05, epochs), exponential_decay(0.2, 0.05, epochs)
    lr_l, lr_e = 0.15, 0.2
    step, factor = (0.15 - 0.05) / (epochs - 1), np.power(0.05 / 0.2, 1.0 / (epochs - 1))
    for e in range(epochs):
        assert lin(e) == pytest.approx(lr_l, rel=1e-12)
        assert expo(e) == pytest.approx(lr_e, rel=1e-12)
        lr_l -= step
        lr_e *= factor


def test_constant_schedule():
    s = constant(0.1)
    assert s(0) == s(1000) == 0.1
    with pytest.raises(ValueError, match="constant"):
        constant(0.0)


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: exponential_decay(0.2, 0.0, 10), ValueError, "final_lr must be positive"),
        (lambda: exponential_decay(0.2, -0.05, 10), ValueError, "final_lr must be positive"),
        (lambda: linear_decay(0.15, 0.0, 10), ValueError, "final_lr must be positive"),
        (
            lambda: linear_decay(0.15, 0.05, 1),
            ValueError,
            r"epochs must be an integer in \[2, inf\)",
        ),
        (
            lambda: exponential_decay(0.2, 0.05, 0),
            ValueError,
            r"epochs must be an integer in \[2, inf\)",
        ),
        (lambda: linear_decay(0.05, 0.15, 10), ValueError, "must not grow"),
        (lambda: linear_decay(0.0, 0.0, 10), ValueError, "lr must be positive"),
        (lambda: linear_decay(0.15, 0.05, 10.0), TypeError, "epochs must be an integer"),
        (lambda: linear_decay(0.15, 0.05, 3)(3), ValueError, r"epoch index 3 is outside 0..2"),
        (lambda: linear_decay(0.15, 0.05, 3)(-1), ValueError, "epoch index -1"),
        (lambda: linear_decay(0.15, 0.05, 3)(1.0), TypeError, "must be an integer"),
    ],
)
def test_invalid_schedules(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_schedules_accept_numpy_scalars():
    assert linear_decay(np.float32(0.15), np.float64(0.05), np.int64(3)).epochs == 3
    assert constant(np.float32(0.5))(np.int32(2)) == 0.5
