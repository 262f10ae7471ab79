"""Book-compatible mode: the book's numpy draws, replayed, give the book's chapter 3 table.

REFERENCE.md, chapter 3 (152 test rows of Boston, seed 20190501, SGD lr 0.01, 50 epochs, batch
32, evaluation every 10 epochs with the book's early stopping): MAE / RMSE of the linear model
3.52 / 5.01, one hidden layer of 13 sigmoids 2.60 / 4.03, two such layers 2.45 / 3.83.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.book import bookmode
from jaxscratch.core import serial
from jaxscratch.data import boston_book_data
from jaxscratch.ops.dense import dense
from jaxscratch.ops.losses import mean_squared_error
from jaxscratch.optim.optimizers import sgd
from jaxscratch.train import metrics
from jaxscratch.train.loop import fit, predict
from jaxscratch.train.stopping import book_rule

SEED = 20190501
BOOK = {(1,): (3.52, 5.01), (13, 1): (2.60, 4.03), (13, 13, 1): (2.45, 3.83)}


def _book_draws(sizes, n_in, n_train, epochs, seed):
    """The book's chapter 3 ``Trainer.fit`` draws, written the book's way (one RandomState standing
    in for numpy's global RNG): permute the already permuted rows each epoch; the layers seed
    and draw W then B lazily, at the first forward pass, after epoch 1's permutation."""
    rng = np.random.RandomState(seed)
    rows = np.arange(n_train)
    orders, params = [], []
    for e in range(epochs):
        rows = rows[rng.permutation(n_train)]
        orders.append(rows.copy())
        if e == 0:
            fan_in = n_in
            for size in sizes:
                rng.seed(seed)
                params.append({"W": rng.randn(fan_in, size), "B": rng.randn(1, size)})
                fan_in = size
    return params, np.stack(orders)


def test_draws_follow_the_book_and_leave_numpy_alone():
    state = np.random.get_state()  # noqa: NPY002 (the global RNG is what must stay untouched)
    params, orders = bookmode.ch3_init_and_orders((13, 13, 1), 13, 354, 50, SEED)
    after = np.random.get_state()  # noqa: NPY002
    assert (
        np.array_equal(state[1], after[1]) and state[2] == after[2]
    )  # numpy's global RNG untouched
    ref_params, ref_orders = _book_draws((13, 13, 1), 13, 354, 50, SEED)
    np.testing.assert_array_equal(orders, ref_orders)
    for p, r in zip(params, ref_params, strict=True):
        np.testing.assert_array_equal(p["W"], r["W"])
        np.testing.assert_array_equal(p["B"], r["B"])
    assert all(sorted(o) == list(range(354)) for o in orders[:3])


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="ch3_init_and_orders"):
        bookmode.ch3_init_and_orders((13, 0), 13, 354, 50, SEED)


@pytest.mark.parametrize("sizes", list(BOOK), ids=["linear", "one_hidden", "two_hidden"])
def test_the_books_chapter_3_digits(sizes):
    X_train, X_test, y_train, y_test = boston_book_data()
    acts = ["sigmoid"] * (len(sizes) - 1) + ["linear"]
    net = serial(*(dense(n, a) for n, a in zip(sizes, acts, strict=True)))
    params, orders = bookmode.ch3_init_and_orders(sizes, 13, len(X_train), 50, SEED)
    result = fit(
        net,
        mean_squared_error,
        sgd(),
        jax.tree.map(jnp.asarray, params),
        np.asarray(X_train, np.float64),
        np.asarray(y_train, np.float64),
        epochs=50,
        batch_size=32,
        lr=0.01,
        eval_data=(X_test, y_test),
        eval_every=10,
        stopping=book_rule(10),
        permutations=orders,
    )
    pred = np.asarray(predict(net, result.params, np.asarray(X_test, np.float64)))
    mae, rmse = float(metrics.mae(pred, y_test)), float(metrics.rmse(pred, y_test))
    assert (round(mae, 2), round(rmse, 2)) == BOOK[sizes], (mae, rmse)
