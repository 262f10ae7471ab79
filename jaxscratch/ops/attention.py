"""Multi-head scaled dot-product self-attention (Vaswani et al., 2017), with a hand backward.

``multi_head_attention(heads, dim, causal=False)``: x (batch, T, d_in) -> y (batch, T, dim).
params ``{"Wq", "Wk", "Wv": (d_in, dim), "Wo": (dim, dim)}`` (no biases). With ``h = heads``
and ``d = dim // h`` (``dim`` must divide), per head::

    Q, K, V = x Wq, x Wk, x Wv            split into h heads of width d: (batch, h, T, d)
    S = Q K^T / sqrt(d)                   (batch, h, T, T); causal: S[i, j] = -inf for j > i
    P = softmax(S) over the last axis     (position i attends to j with weight P[i, j])
    O = P V;  A = the heads side by side  (batch, T, dim);  y = A Wo

Backward (chain rule back through each line; the softmax's is the one to derive)::

    dWo = A^T dy        dA = dy Wo^T -> dO (split into heads)
    dP = dO V^T         dV = P^T dO
    dS = P * (dP - sum_j(dP * P))        the softmax's Jacobian-vector product, row by row
    dQ = dS K / sqrt(d) dK = dS^T Q / sqrt(d)
    dWq = x^T dQ (likewise K, V)         dx = dQ Wq^T + dK Wk^T + dV Wv^T  (x fans out thrice)

Masked entries have ``P = 0``, hence ``dS = 0``: the causal mask needs nothing in the backward.
cache: ``(x, Q, K, V, P, A, Wq, Wk, Wv, Wo)`` with Q, K, V split into heads (batch, h, T, d).

``transformer_block(heads, dim, hidden, causal)``: the pre-norm block (as in GPT-2), built from
the ops above with :mod:`jaxscratch.ops.combinators`, so its backward is theirs composed::

    h = x + multi_head_attention(layer_norm(x))
    y = h + dense(dim)(dense(hidden, activation)(layer_norm(h)))     (dense at every position)

x (batch, T, dim) -> y (batch, T, dim). params ``((ln, attention), (ln, (dense, dense)))``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

from jaxscratch.core import Array, Op, Shape, register, serial
from jaxscratch.ops import init as initializers
from jaxscratch.ops.combinators import per_position, residual
from jaxscratch.ops.dense import dense
from jaxscratch.ops.norm import layer_norm
from jaxscratch.validate import check_positive_int

WEIGHTS = ("Wq", "Wk", "Wv", "Wo")


def _split_heads(a: Array, h: int) -> Array:
    """(batch, T, h*d) -> (batch, h, T, d)."""
    b, t, dim = a.shape
    return a.reshape(b, t, h, dim // h).transpose(0, 2, 1, 3)


def _merge_heads(a: Array) -> Array:
    """(batch, h, T, d) -> (batch, T, h*d), the heads side by side."""
    b, h, t, d = a.shape
    return a.transpose(0, 2, 1, 3).reshape(b, t, h * d)


def _softmax(s: Array) -> Array:
    """Row softmax over the last axis; -inf entries get weight 0. The shift by the row maximum
    does not change the value, so no gradient flows through it."""
    e = jnp.exp(s - jax.lax.stop_gradient(jnp.max(s, axis=-1, keepdims=True)))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _attend(q: Array, k: Array, v: Array, causal: bool) -> tuple[Array, Array]:
    """(O, P) for heads q, k, v of shape (batch, h, T, d)."""
    s = jnp.einsum("bhid,bhjd->bhij", q, k) / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    if causal:
        t = q.shape[2]
        later = jnp.arange(t)[None, :] > jnp.arange(t)[:, None]  # (T, T): j > i
        s = jnp.where(later[None, None], jnp.asarray(-jnp.inf, s.dtype), s)
    p = _softmax(s)
    return jnp.einsum("bhij,bhjd->bhid", p, v), p


def _attend_backward(
    q: Array, k: Array, v: Array, p: Array, do: Array
) -> tuple[Array, Array, Array]:
    """(dQ, dK, dV) from dO, all (batch, h, T, d): back through O = P V and P = softmax(S)."""
    dp = jnp.einsum("bhid,bhjd->bhij", do, v)
    dv = jnp.einsum("bhij,bhid->bhjd", p, do)
    ds = p * (dp - jnp.sum(dp * p, axis=-1, keepdims=True))
    scale = 1.0 / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    dq = jnp.einsum("bhij,bhjd->bhid", ds, k) * scale
    dk = jnp.einsum("bhij,bhid->bhjd", ds, q) * scale
    return dq, dk, dv


def _check(name: str, params: dict[str, Array], x: Array, h: int) -> None:
    missing = [w for w in WEIGHTS if w not in params]
    if missing:
        raise ValueError(f"{name}: params lack {missing}; expected {list(WEIGHTS)}")
    Wq, Wo = params["Wq"], params["Wo"]
    d_in, dim = Wq.shape
    if any(params[w].shape != (d_in, dim) for w in ("Wk", "Wv")) or Wo.shape != (dim, dim):
        shapes = {w: tuple(params[w].shape) for w in WEIGHTS}
        raise ValueError(f"{name}: expected Wq, Wk, Wv (d_in, dim) and Wo (dim, dim), got {shapes}")
    if dim % h:
        raise ValueError(f"{name}: dim {dim} is not divisible by heads {h}")
    if x.ndim != 3 or x.shape[2] != d_in:
        raise ValueError(
            f"{name}: x{tuple(x.shape)} does not fit Wq{(d_in, dim)}; expected (batch, T, {d_in})"
        )


def _flat_t(a: Array, b: Array) -> Array:
    """sum over batch and time of a[b, t]^T b[b, t]: (batch, T, m), (batch, T, n) -> (m, n)."""
    return jnp.einsum("btm,btn->mn", a, b)


def multi_head_attention(
    heads: int,
    dim: int,
    causal: bool = False,
    *,
    init: str = "glorot",
    dtype: DTypeLike | None = None,
) -> Op:
    """Self-attention over a sequence (see the module docstring).

    x (batch, T, d_in) -> y (batch, T, dim); params Wq, Wk, Wv (d_in, dim), Wo (dim, dim),
    drawn by ``init`` (:data:`jaxscratch.ops.init.INITIALIZERS`). ``causal=True``: position i
    sees positions <= i only (a language model). init: per-row (T, d_in) -> (T, dim).
    """
    h = check_positive_int("multi_head_attention", "heads", heads)
    dim = check_positive_int("multi_head_attention", "dim", dim)
    if dim % h:
        raise ValueError(f"multi_head_attention: dim {dim} is not divisible by heads {h}")
    if not isinstance(causal, bool):
        raise TypeError(f"multi_head_attention: causal must be True or False, got {causal!r}")
    initializers.check_initializer("multi_head_attention", init)
    name = f"multi_head_attention[{h},{dim}{',causal' if causal else ''}]"

    def forward(params: dict[str, Array], x: Array) -> tuple[Array, tuple]:
        """y = concat_heads(softmax(Q K^T / sqrt(d)) V) Wo. Caches the inputs of every product."""
        _check(name, params, x, h)
        Wq, Wk, Wv, Wo = (params[w] for w in WEIGHTS)
        q, k, v = (_split_heads(x @ W, h) for W in (Wq, Wk, Wv))
        o, p = _attend(q, k, v, causal)
        a = _merge_heads(o)
        return a @ Wo, (x, q, k, v, p, a, Wq, Wk, Wv, Wo)

    def backward(cache: tuple, dy: Array) -> tuple[dict[str, Array], Array]:
        """Gradients of Wq, Wk, Wv, Wo and x (see the module docstring)."""
        x, q, k, v, p, a, Wq, Wk, Wv, Wo = cache
        if dy.shape != a.shape:
            raise ValueError(f"{name}: dy{tuple(dy.shape)} does not match y{tuple(a.shape)}")
        dq, dk, dv = (
            _merge_heads(g) for g in _attend_backward(q, k, v, p, _split_heads(dy @ Wo.T, h))
        )
        grads = {
            "Wq": _flat_t(x, dq),
            "Wk": _flat_t(x, dk),
            "Wv": _flat_t(x, dv),
            "Wo": _flat_t(a, dy),
        }
        return grads, dq @ Wq.T + dk @ Wk.T + dv @ Wv.T

    def init_fn(key: Array, in_shape: Shape) -> tuple[Shape, dict[str, Array]]:
        if len(in_shape) != 2:
            raise ValueError(f"{name}: expects inputs (batch, T, d_in), got per-row {in_shape}")
        t, d_in = in_shape
        keys = jax.random.split(key, 4)
        shapes = [(d_in, dim)] * 3 + [(dim, dim)]
        params = {
            w: initializers.initialize(init, kk, s, dtype)
            for w, kk, s in zip(WEIGHTS, keys, shapes, strict=True)
        }
        return (t, dim), params

    return Op(name, forward, backward, init_fn)


def _example(key: Array) -> tuple[dict[str, Array], Array]:
    """batch 2, T 5, d_in 7, dim 6 in 2 heads of 3: no two sizes equal; weights scaled so that
    the softmax is neither flat nor saturated; x off-centre."""
    rng = initializers.host_rng(key)
    d_in, dim = 7, 6
    shapes = [(d_in, dim)] * 3 + [(dim, dim)]
    params = {
        w: jnp.asarray(rng.standard_normal(s) / s[0] ** 0.5)
        for w, s in zip(WEIGHTS, shapes, strict=True)
    }
    return params, jnp.asarray(0.3 + 1.5 * rng.standard_normal((2, 5, d_in)))


def transformer_block(
    heads: int,
    dim: int,
    hidden: int,
    causal: bool = False,
    *,
    activation: str = "relu",
    eps: float = 1e-5,
) -> Op:
    """The pre-norm transformer block (see the module docstring): attention then a two-layer
    position-wise MLP of width ``hidden``, each inside a residual after a layer norm.

    x (batch, T, dim) -> y (batch, T, dim); params ``((ln, attention), (ln, (dense, dense)))``;
    cache: the composed ops' caches. init: per-row (T, dim) -> (T, dim).
    """
    hidden = check_positive_int("transformer_block", "hidden", hidden)
    attend = residual(serial(layer_norm(eps), multi_head_attention(heads, dim, causal)))
    mlp = serial(per_position(dense(hidden, activation)), per_position(dense(dim)))
    label = f"transformer_block[{heads},{dim},{hidden}{',causal' if causal else ''}]"
    return serial(attend, residual(serial(layer_norm(eps), mlp)), name=label)


def _block_example(key: Array) -> tuple[tuple, Array]:
    """batch 2, T 5, dim 6 (2 heads of 3), hidden 7; layer-norm gains and dense biases non-trivial."""
    attention_params, x = _example(key)  # d_in 7: its first 6 input features and rows of W
    rng = initializers.host_rng(jax.random.fold_in(key, 1))

    def ln() -> dict[str, Array]:
        return {
            "gamma": jnp.asarray(1 + 0.3 * rng.standard_normal(6)),
            "beta": jnp.asarray(0.3 * rng.standard_normal(6)),
        }

    def layer(n_in: int, n_out: int) -> dict[str, Array]:
        W = rng.standard_normal((n_in, n_out)) / n_in**0.5
        return {"W": jnp.asarray(W), "B": jnp.asarray(0.3 * rng.standard_normal((1, n_out)))}

    params = (
        (ln(), {k: v[:6] for k, v in attention_params.items()}),
        (ln(), (layer(6, 7), layer(7, 6))),
    )
    return params, x[..., :6]


register(multi_head_attention(2, 6), _example, name="multi_head_attention")
register(
    transformer_block(2, 6, 7, causal=True, activation="tanh"),
    _block_example,
    name="transformer_block[causal]",
)
register(multi_head_attention(2, 6, causal=True), _example, name="multi_head_attention[causal]")

__all__ = ["multi_head_attention", "transformer_block"]
