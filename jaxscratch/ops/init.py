"""Weight initialisers: ``init(key, shape, dtype) -> array``.

``normal``: standard normal, as the book's chapter 3 layers (``np.random.randn``).
``glorot_normal``: normal with std ``sqrt(2 / (fan_in + fan_out))`` (Glorot & Bengio 2010; the 2019
book code omitted the square root). Fans: for a matrix ``(fan_in, fan_out)``; for a conv kernel
``(C_out, C_in, k, k)``, ``fan_in = C_in*k*k`` and ``fan_out = C_out*k*k``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxscratch.validate import check_choice

Initializer = Callable[..., jax.Array]


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a dense ``(n_in, n_out)`` or conv ``(C_out, C_in, kh, kw)`` weight."""
    if len(shape) == 2:
        return shape[0], shape[1]
    if len(shape) == 4:
        receptive = shape[2] * shape[3]
        return shape[1] * receptive, shape[0] * receptive
    if len(shape) == 1:
        return shape[0], shape[0]
    raise ValueError(f"fans: cannot infer fans of a weight of shape {shape}")


def normal(
    key: jax.Array, shape: tuple[int, ...], dtype: DTypeLike | None = None, *, scale: float = 1.0
) -> jax.Array:
    """Normal draws with standard deviation ``scale`` (1: the book's ``randn``)."""
    return scale * jax.random.normal(key, shape, dtype or jnp.result_type(float))


def glorot_scale(fan_in: int, fan_out: int) -> float:
    """Glorot normal standard deviation ``sqrt(2 / (fan_in + fan_out))``."""
    return (2.0 / (fan_in + fan_out)) ** 0.5


def glorot_normal(
    key: jax.Array, shape: tuple[int, ...], dtype: DTypeLike | None = None
) -> jax.Array:
    """Normal draws with std ``sqrt(2 / (fan_in + fan_out))`` (see :func:`fans`)."""
    return normal(key, shape, dtype, scale=glorot_scale(*fans(shape)))


INITS: dict[str, str] = {"normal": "standard normal", "glorot": "Glorot normal"}


def check_init(fn: str, init: str) -> str:
    """``init`` if it names an initialiser (``INITS``); else ``TypeError``/``ValueError`` naming
    ``fn`` and the allowed names (:func:`jaxscratch.validate.check_choice`)."""
    return check_choice(fn, "init", init, INITS)
