"""Book-compatible mode: replay the numpy random draws of the book's chapter 3 trainer.

This is the one deliberate exception to "randomness only from ``jax.random`` keys": it reproduces,
draw for draw, what the book's ``Trainer.fit`` does with numpy's legacy global RNG, so the book's
printed tables can be matched to their last digit (see ``shared/REFERENCE.md``, chapter 3):

1. ``np.random.seed(seed)``; each epoch draws ``np.random.permutation(n)`` and applies it to the
   *already permuted* training set (the book reassigns ``X_train, y_train = permute_data(...)``),
   so the row order of epoch ``e`` is the composition of all permutations so far;
2. the layers initialise lazily at the first forward pass, i.e. after epoch 1's permutation: each
   layer calls ``np.random.seed(seed)`` again and draws ``W = randn(n_in, n_out)`` then
   ``B = randn(1, n_out)``; later permutations continue from the state the last layer left.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxscratch.validate import check_int, check_positive_int


def ch3_init_and_orders(
    layer_sizes: Sequence[int], n_in: int, n_train: int, epochs: int, seed: int
) -> tuple[tuple[dict[str, np.ndarray], ...], np.ndarray]:
    """The book's chapter 3 draws for dense layers of ``layer_sizes`` on ``n_in`` features.

    Returns ``(params, orders)``: ``params`` a tuple of ``{"W": (n_in, n_out), "B": (1, n_out)}``
    float64 dicts (the ``serial`` layout), and ``orders`` an ``(epochs, n_train)`` integer array,
    row ``e`` holding the indices of the original training rows in the order epoch ``e`` visits
    them (pass it to ``trainer.fit(permutations=...)``).
    """
    fn = "ch3_init_and_orders"
    if not layer_sizes:
        raise ValueError(f"{fn}: layer_sizes is empty; it needs at least one layer")
    layer_sizes = [check_positive_int(fn, "a layer size", s) for s in layer_sizes]
    n_in = check_positive_int(fn, "n_in", n_in)
    n_train = check_positive_int(fn, "n_train", n_train)
    epochs = check_positive_int(fn, "epochs", epochs)
    seed = check_int(fn, "seed", seed, minimum=0, maximum=2**32 - 1)
    rng = np.random.RandomState(seed)  # the book's global RNG, without touching numpy's
    order = np.arange(n_train)
    orders = np.empty((epochs, n_train), dtype=np.int64)
    params: list[dict[str, np.ndarray]] = []
    for e in range(epochs):
        order = order[rng.permutation(n_train)]
        orders[e] = order
        if e == 0:
            fan_in = n_in
            for size in layer_sizes:
                rng.seed(seed)
                W = rng.randn(fan_in, size)
                B = rng.randn(1, size)
                params.append({"W": W, "B": B})
                fan_in = size
    return tuple(params), orders
