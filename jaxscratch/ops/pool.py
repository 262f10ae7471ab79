"""Flatten and max pooling (the book's chapter 5), parameter-free ops on NCHW images.

Both follow the contract of :mod:`jaxscratch.core` (``forward((), x) -> (y, cache)``,
``backward(cache, dy) -> ((), dx)``); the backward passes are derived by hand and proven against
``jax.vjp`` and finite differences by :mod:`jaxscratch.oracle.check`.

``flatten``: (N, C, H, W) (any (N, ...)) -> (N, C*H*W), row-major; the cache is the input shape.

``max_pool2d``: ``p x p`` windows (default 2x2) moved by ``stride`` (default ``p``: windows that
tile the image); ``stride < p`` overlaps them (3x3 stride 2, as in AlexNet and ResNet's stem).
``H_out = (H - p) // stride + 1`` (likewise W): rows/columns no window reaches get zero gradient.
**Ties**: each window sends its gradient to the **first** maximum in row-major window order
``(0,0), (0,1), ..., (1,0), ...`` only; with overlap, an element selected by several windows
receives the sum of their cotangents (a scatter-add).

``avg_pool2d``: the mean of each ``p x p`` window, same windows and output size as ``max_pool2d``;
its backward spreads ``dy / p**2`` over each window, scatter-added where windows overlap.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.core import Array, Op, Shape, register
from jaxscratch.ops.init import host_rng
from jaxscratch.validate import check_positive_int


def _flatten_forward(params: tuple[()], x: Array) -> tuple[Array, tuple[int, ...]]:
    """(N, C, H, W) (any (N, ...)) -> (N, C*H*W), row-major. Caches the input shape."""
    del params
    if x.ndim < 2:
        raise ValueError(f"flatten: x must have a batch axis and at least one more, got {x.shape}")
    return x.reshape(x.shape[0], -1), tuple(x.shape)


def _flatten_backward(cache: tuple[int, ...], dy: Array) -> tuple[tuple[()], Array]:
    if dy.shape != (cache[0], math.prod(cache[1:])):
        raise ValueError(f"flatten: dy{tuple(dy.shape)} does not match the input shape {cache}")
    return (), dy.reshape(cache)


def _flatten_init(key: jax.Array, in_shape: Shape) -> tuple[Shape, tuple[()]]:
    del key
    return (math.prod(in_shape),), ()


def make_max_pool2d(size: int = 2, stride: int | None = None) -> Op:
    """Max pooling over ``size x size`` windows moved by ``stride`` (default ``size``), NCHW.

    ``stride == size`` (the default; the names ``max_pool2d``/``max_pool2d[p]`` of the book's
    layer) is :func:`_tiled_max_pool2d`; any other stride is :func:`_strided_max_pool2d`
    (named ``max_pool2d[p,s]``). Both: x (N, C, H, W) -> y (N, C, (H - size) // stride + 1,
    (W - size) // stride + 1); ties go to the first maximum of a window in row-major order.
    """
    p = check_positive_int("max_pool2d", "size", size)
    s = p if stride is None else check_positive_int("max_pool2d", "stride", stride)
    if s == p:
        return _tiled_max_pool2d(p)
    return _strided_max_pool2d(p, s)


def _tiled_max_pool2d(p: int) -> Op:
    """Max pooling over non-overlapping ``p x p`` windows (stride ``p``), NCHW.

    x: (N, C, H, W) -> y: (N, C, H // size, W // size) (floor: trailing rows/columns are dropped
    and get zero gradient). Ties: the gradient goes to the first maximum of the window in
    row-major order only (the forward pass selects that element, so ``jax.vjp`` agrees even on
    ties). Cache: a boolean mask of the input's shape, True at each window's selected element.
    Backward: ``dx = mask * dy`` repeated over each window (zero in the dropped rows/columns).
    """
    name = "max_pool2d" if p == 2 else f"max_pool2d[{p}]"

    def forward(params: tuple[()], x: Array) -> tuple[Array, Array]:
        """y = the first maximum of each window. Caches the selection mask (shape of x)."""
        del params
        if x.ndim != 4:
            raise ValueError(f"{name}: x must be (batch, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[2] < p or x.shape[3] < p:
            raise ValueError(
                f"{name}: input {x.shape[2]}x{x.shape[3]} is smaller than the {p}x{p} window"
            )
        return _forward(x)

    @jax.jit
    def _forward(x: Array) -> tuple[Array, Array]:
        N, C, H, W = x.shape
        Ho, Wo = H // p, W // p
        win = x[:, :, : Ho * p, : Wo * p].reshape(N, C, Ho, p, Wo, p)
        win = jnp.transpose(win, (0, 1, 2, 4, 3, 5)).reshape(N, C, Ho, Wo, p * p)
        first = jnp.argmax(win, axis=-1)  # the first maximum in row-major window order
        onehot = first[..., None] == jnp.arange(p * p).reshape(1, 1, 1, 1, p * p)
        y = jnp.sum(jnp.where(onehot, win, jnp.zeros((), win.dtype)), axis=-1)
        mask = jnp.transpose(onehot.reshape(N, C, Ho, Wo, p, p), (0, 1, 2, 4, 3, 5))
        mask = mask.reshape(N, C, Ho * p, Wo * p)
        mask = jnp.pad(mask, ((0, 0), (0, 0), (0, H - Ho * p), (0, W - Wo * p)))
        return y, mask

    def backward(cache: Array, dy: Array) -> tuple[tuple[()], Array]:
        """dx = dy routed to the selected element of each window, zero elsewhere."""
        N, C, H, W = cache.shape
        if dy.shape != (N, C, H // p, W // p):
            raise ValueError(
                f"{name}: dy{tuple(dy.shape)} does not match the output {(N, C, H // p, W // p)}"
            )
        return (), _backward(cache, dy)

    @jax.jit
    def _backward(mask: Array, dy: Array) -> Array:
        N, C, H, W = mask.shape
        Ho, Wo = dy.shape[2:]
        up = jnp.broadcast_to(dy[:, :, :, None, :, None], (N, C, Ho, p, Wo, p))
        up = up.reshape(N, C, Ho * p, Wo * p)
        up = jnp.pad(up, ((0, 0), (0, 0), (0, H - Ho * p), (0, W - Wo * p)))
        return jnp.where(mask, up, jnp.zeros((), dy.dtype))

    return Op(name, forward, backward, _pool_init(name, p, p))


def _check_image(name: str, x: Array, p: int) -> None:
    if x.ndim != 4:
        raise ValueError(f"{name}: x must be (batch, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[2] < p or x.shape[3] < p:
        raise ValueError(
            f"{name}: input {x.shape[2]}x{x.shape[3]} is smaller than the {p}x{p} window"
        )


def _pool_init(name: str, p: int, s: int):
    """``init(key, (C, H, W)) -> ((C, H_out, W_out), ())`` for ``p x p`` windows, stride ``s``."""

    def init_fn(key: jax.Array, in_shape: Shape) -> tuple[Shape, tuple[()]]:
        del key
        if len(in_shape) != 3:
            raise ValueError(f"{name}: expects inputs (batch, C, H, W), got per-row {in_shape}")
        C, H, W = in_shape
        if H < p or W < p:
            raise ValueError(f"{name}: input {H}x{W} is smaller than the {p}x{p} window")
        return (C, (H - p) // s + 1, (W - p) // s + 1), ()

    return init_fn


def _window_index(n: tuple[int, ...], p: int, s: int) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (rows (Ho, 1, p, 1), cols (1, Wo, 1, p)) for an (n[0], n[1]) image: ``x[:, :,
    rows, cols]`` is every window, shaped (N, C, Ho, Wo, p, p)."""
    starts = [np.arange((m - p) // s + 1) * s for m in n]
    rows = (starts[0][:, None] + np.arange(p)[None, :])[:, None, :, None]
    cols = (starts[1][:, None] + np.arange(p)[None, :])[None, :, None, :]
    return rows, cols


def _scatter_windows(shape: tuple[int, ...], vals: Array, p: int, s: int) -> Array:
    """Zeros of the image ``shape`` with every window's (N, C, Ho, Wo, p, p) values added in."""
    rows, cols = _window_index(shape[2:], p, s)
    return jnp.zeros(shape, vals.dtype).at[:, :, rows, cols].add(vals)


def _check_dy(name: str, shape: tuple[int, ...], dy: Array, p: int, s: int) -> None:
    N, C, H, W = shape
    out = (N, C, (H - p) // s + 1, (W - p) // s + 1)
    if tuple(dy.shape) != out:
        raise ValueError(f"{name}: dy{tuple(dy.shape)} does not match the output {out}")


def _strided_max_pool2d(p: int, s: int) -> Op:
    """Max pooling over ``p x p`` windows at stride ``s != p`` (overlapping when ``s < p``).

    x (N, C, H, W) -> y (N, C, Ho, Wo), ``Ho = (H - p) // s + 1``. Cache: ``(one-hot, shape of
    x)``, the one-hot (N, C, Ho, Wo, p, p) boolean marking each window's first maximum
    (row-major). Backward: each window's ``dy`` at its selected element, scatter-added.
    """
    name = f"max_pool2d[{p},{s}]"

    def forward(params: tuple[()], x: Array) -> tuple[Array, tuple]:
        """y = the first maximum of each window. Caches the per-window selection."""
        del params
        _check_image(name, x, p)
        rows, cols = _window_index(x.shape[2:], p, s)
        win = x[:, :, rows, cols]
        flat = win.reshape(*win.shape[:4], p * p)
        first = jnp.argmax(flat, axis=-1)  # the first maximum in row-major window order
        onehot = (first[..., None] == jnp.arange(p * p).reshape(1, 1, 1, 1, p * p)).reshape(
            win.shape
        )
        y = jnp.sum(jnp.where(onehot, win, jnp.zeros((), win.dtype)), axis=(-2, -1))
        return y, (onehot, tuple(x.shape))

    def backward(cache: tuple, dy: Array) -> tuple[tuple[()], Array]:
        """dx: each window's dy at its selected element, summed over overlapping windows."""
        onehot, shape = cache
        _check_dy(name, shape, dy, p, s)
        vals = jnp.where(onehot, dy[..., None, None], jnp.zeros((), dy.dtype))
        return (), _scatter_windows(shape, vals, p, s)

    return Op(name, forward, backward, _pool_init(name, p, s))


def make_avg_pool2d(size: int = 2, stride: int | None = None) -> Op:
    """Average pooling over ``size x size`` windows moved by ``stride`` (default ``size``), NCHW.

    x (N, C, H, W) -> y (N, C, (H - size) // stride + 1, (W - size) // stride + 1), the mean of
    each window. Cache: the shape of x (a tuple of ints). Backward: ``dy / size**2`` added to
    every element of its window (a scatter-add where windows overlap); elements no window
    reaches get zero. Named ``avg_pool2d`` (2x2 stride 2), ``avg_pool2d[p]`` or ``avg_pool2d[p,s]``.
    """
    p = check_positive_int("avg_pool2d", "size", size)
    s = p if stride is None else check_positive_int("avg_pool2d", "stride", stride)
    name = "avg_pool2d" if p == s == 2 else f"avg_pool2d[{p}]" if p == s else f"avg_pool2d[{p},{s}]"

    def forward(params: tuple[()], x: Array) -> tuple[Array, tuple[int, ...]]:
        """y = the mean of each window. Caches the input shape."""
        del params
        _check_image(name, x, p)
        rows, cols = _window_index(x.shape[2:], p, s)
        return jnp.mean(x[:, :, rows, cols], axis=(-2, -1)), tuple(x.shape)

    def backward(cache: tuple[int, ...], dy: Array) -> tuple[tuple[()], Array]:
        """dx: dy / p**2 spread over each window, summed where windows overlap."""
        _check_dy(name, cache, dy, p, s)
        vals = jnp.broadcast_to(dy[..., None, None] / (p * p), (*dy.shape, p, p))
        return (), _scatter_windows(cache, vals, p, s)

    return Op(name, forward, backward, _pool_init(name, p, s))


# ------------------------------------------------------------------------------------------------
# Registry: the module-level ops, each with an oracle example
# ------------------------------------------------------------------------------------------------


def _x_example(shape: tuple[int, ...]):
    """A parameter-free op's oracle example: ``((), x)``, x float64 normal of ``shape``."""

    def example(key: jax.Array) -> tuple[tuple[()], Array]:
        return (), jnp.asarray(host_rng(key).standard_normal(shape))

    return example


flatten = register(
    Op("flatten", _flatten_forward, _flatten_backward, _flatten_init), _x_example((3, 2, 5, 4))
)
max_pool2d = register(make_max_pool2d(2), _x_example((3, 2, 7, 6)))  # odd height: floored
# 3x3 windows at stride 2 overlap by one row/column; 8 wide leaves the last column unreached
register(make_max_pool2d(3, 2), _x_example((2, 3, 7, 8)), name="max_pool2d[3,2]")
# one example per code path (a stride of its own shares _strided_max_pool2d's code; tiled
# average pooling shares avg_pool2d's): each oracle row costs the suite a second or more
register(make_avg_pool2d(3, 2), _x_example((2, 3, 7, 8)), name="avg_pool2d[3,2]")

__all__ = ["flatten", "make_avg_pool2d", "make_max_pool2d", "max_pool2d"]
