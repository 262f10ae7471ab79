"""Weight initialisers: ``init(key, shape, dtype) -> array``.

``normal``: standard normal, as the book's chapter 3 layers (``np.random.randn``).
``glorot_normal``: normal with std ``sqrt(2 / (fan_in + fan_out))`` (Glorot & Bengio 2010; the 2019
book code omitted the square root). Fans: for a matrix ``(fan_in, fan_out)``; for a conv kernel
``(C_out, C_in, k, k)``, ``fan_in = C_in*k*k`` and ``fan_out = C_out*k*k``.
``he`` / ``he_uniform``: He/Kaiming (He et al. 2015, for ReLU layers): normal with std
``sqrt(2 / fan_in)``, or uniform on ``[-b, b]`` with ``b = sqrt(6 / fan_in)`` (the same variance).

:data:`INITIALIZERS` maps every name to its function and :func:`initialize` draws by name; an op
of its own accepts any of them with :func:`check_initializer`. :data:`INITS` (checked by
:func:`check_init`) describes the same names for configs; ``dense`` and ``conv2d`` draw their
weights through :func:`initialize` (``dense``'s bias: the book's draw with W's scale for
``normal``/``glorot``, zeros for ``he``/``he_uniform``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
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


def he_scale(fan_in: int) -> float:
    """He/Kaiming normal standard deviation ``sqrt(2 / fan_in)``."""
    return (2.0 / fan_in) ** 0.5


def he_normal(key: jax.Array, shape: tuple[int, ...], dtype: DTypeLike | None = None) -> jax.Array:
    """Normal draws with std ``sqrt(2 / fan_in)`` (see :func:`fans`)."""
    return normal(key, shape, dtype, scale=he_scale(fans(shape)[0]))


def he_uniform(key: jax.Array, shape: tuple[int, ...], dtype: DTypeLike | None = None) -> jax.Array:
    """Uniform draws on ``[-b, b]``, ``b = sqrt(6 / fan_in)``: variance ``2 / fan_in``, as
    :func:`he_normal`."""
    bound = 3.0**0.5 * he_scale(fans(shape)[0])
    dtype = dtype or jnp.result_type(float)
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)


INITS: dict[str, str] = {
    "normal": "standard normal",
    "glorot": "Glorot normal",
    "he": "He normal",
    "he_uniform": "He uniform",
}

INITIALIZERS: dict[str, Initializer] = {
    "normal": normal,
    "glorot": glorot_normal,
    "he": he_normal,
    "he_uniform": he_uniform,
}


def initialize(
    name: str, key: jax.Array, shape: tuple[int, ...], dtype: DTypeLike | None = None
) -> jax.Array:
    """A weight of ``shape`` drawn by the initialiser ``name`` (a key of :data:`INITIALIZERS`)."""
    return INITIALIZERS[check_initializer("initialize", name)](key, shape, dtype)


def check_initializer(fn: str, init: str) -> str:
    """``init`` if it names one of :data:`INITIALIZERS` (``he`` included); else
    ``TypeError``/``ValueError`` naming ``fn`` and the allowed names."""
    return check_choice(fn, "init", init, INITIALIZERS)


def check_init(fn: str, init: str) -> str:
    """``init`` if it names an initialiser (``INITS``); else ``TypeError``/``ValueError`` naming
    ``fn`` and the allowed names (:func:`jaxscratch.validate.check_choice`)."""
    return check_choice(fn, "init", init, INITS)


def host_rng(key: jax.Array) -> np.random.Generator:
    """A numpy generator seeded from ``key``: oracle examples draw their float64 values from it
    on the host, since a ``jax.random`` draw compiles once per new shape, which dominated the
    time of an oracle row. Same key, same draws."""
    seed = np.asarray(jax.random.key_data(key)).ravel().astype(np.uint64).tolist()
    return np.random.default_rng(seed)
