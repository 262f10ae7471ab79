"""multi_head_attention: values against numpy, the causal mask, shapes, refusals, a wrong softmax
backward caught by the oracle."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.core import init_params
from jaxscratch.ops import attention, registry
from jaxscratch.ops.attention import multi_head_attention, transformer_block
from jaxscratch.ops.norm import layer_norm


def _reference(params: dict, x: np.ndarray, h: int, causal: bool) -> np.ndarray:
    """Attention head by head with numpy loops."""
    P = {k: np.asarray(v) for k, v in params.items()}
    q, k, v = x @ P["Wq"], x @ P["Wk"], x @ P["Wv"]
    b, t, dim = q.shape
    d = dim // h
    out = np.zeros((b, t, dim))
    for n in range(b):
        for head in range(h):
            cols = slice(head * d, (head + 1) * d)
            s = q[n, :, cols] @ k[n, :, cols].T / np.sqrt(d)
            if causal:
                s = np.where(np.triu(np.ones((t, t)), 1) > 0, -np.inf, s)
            w = np.exp(s - s.max(1, keepdims=True))
            out[n, :, cols] = (w / w.sum(1, keepdims=True)) @ v[n, :, cols]
    return out @ P["Wo"]


def test_attention_matches_numpy_and_the_mask_hides_the_future():
    params, x = registry()["multi_head_attention"].example(jax.random.key(1))
    for causal in (False, True):
        op = multi_head_attention(2, 6, causal=causal)
        y, _ = jax.jit(op.forward)(params, x)
        np.testing.assert_allclose(y, _reference(params, np.asarray(x), 2, causal), rtol=1e-12)
    causal_op = multi_head_attention(2, 6, causal=True)
    later = x.at[:, 3:].add(5.0)
    y, _ = jax.jit(causal_op.forward)(params, x)
    y2, _ = jax.jit(causal_op.forward)(params, later)
    np.testing.assert_allclose(y2[:, :3], y[:, :3], rtol=1e-13)  # positions 0..2 never see 3, 4
    y_all = _reference(params, np.asarray(later), 2, False)
    assert not np.allclose(y_all[:, 0], y[:, 0])  # without the mask, they would
    out = {}

    def params_of(key):
        out["shape"], params = init_params(causal_op, key, (5, 7))
        return params

    p = jax.eval_shape(params_of, jax.random.key(0))
    assert out["shape"] == (5, 6) and p["Wq"].shape == (7, 6) and p["Wo"].shape == (6, 6)


def test_the_example_needs_the_softmax_correction(monkeypatch):
    """dS = P * dP (the row term sum_j(dP * P) dropped) changes every gradient on the registry's
    example (the oracle passes the true backward there, tests/test_oracle.py)."""
    entry = registry()["multi_head_attention[causal]"]
    params, x = entry.example(jax.random.key(0))

    def uncorrected(q, k, v, p, do):
        dp = jnp.einsum("bhid,bhjd->bhij", do, v)
        dv = jnp.einsum("bhij,bhid->bhjd", p, do)
        ds = p * dp / np.sqrt(q.shape[-1])
        return jnp.einsum("bhij,bhjd->bhid", ds, k), jnp.einsum("bhij,bhid->bhjd", ds, q), dv

    y, cache = entry.op.forward(params, x)
    dy = jnp.asarray(np.random.default_rng(0).standard_normal(y.shape))
    good = entry.op.backward(cache, dy)
    monkeypatch.setattr(attention, "_attend_backward", uncorrected)
    bad = entry.op.backward(cache, dy)
    for name in ("Wq", "Wk"):
        assert np.abs(np.asarray(good[0][name] - bad[0][name])).max() > 0.01
    assert np.abs(np.asarray(good[1] - bad[1])).max() > 0.01


def test_attention_refuses_bad_shapes_and_arguments():
    op = multi_head_attention(2, 6)
    params, x = registry()["multi_head_attention"].example(jax.random.key(0))
    with pytest.raises(ValueError, match=r"x\(2, 5, 6\) does not fit Wq\(7, 6\)"):
        op.forward(params, x[..., :6])
    with pytest.raises(ValueError, match="params lack"):
        op.forward({"Wq": params["Wq"]}, x)
    with pytest.raises(ValueError, match="expected Wq, Wk, Wv"):
        op.forward({**params, "Wo": params["Wq"]}, x)
    with pytest.raises(ValueError, match="dim 6 is not divisible by heads 4"):
        multi_head_attention(4, 6)
    with pytest.raises(ValueError, match="dim 6 is not divisible by heads 4"):
        multi_head_attention(4, 8).forward(params, x)
    with pytest.raises(TypeError, match="causal must be True or False"):
        multi_head_attention(2, 6, causal=1)
    with pytest.raises(ValueError, match="multi_head_attention: heads must be"):
        multi_head_attention(0, 6)
    with pytest.raises(ValueError, match="dy"):
        op.backward(op.forward(params, x)[1], jnp.ones((2, 5, 7)))


def test_the_transformer_block_composes_its_parts_and_stays_causal():
    entry = registry()["transformer_block[causal]"]
    params, x = entry.example(jax.random.key(0))
    (ln1, attn), (ln2, (d1, d2)) = params
    y, _ = entry.op.forward(params, x)
    norm = layer_norm()
    h = np.asarray(
        x + multi_head_attention(2, 6, causal=True).forward(attn, norm.forward(ln1, x)[0])[0]
    )
    z = np.tanh(
        np.asarray(norm.forward(ln2, jnp.asarray(h))[0]) @ np.asarray(d1["W"]) + np.asarray(d1["B"])
    )
    np.testing.assert_allclose(y, h + z @ np.asarray(d2["W"]) + np.asarray(d2["B"]), rtol=1e-12)
    y2, _ = entry.op.forward(params, x.at[:, 4:].add(3.0))
    np.testing.assert_allclose(y2[:, :4], y[:, :4], rtol=1e-13)
    out = {}

    def params_of(key):
        out["shape"], p = init_params(transformer_block(2, 6, 7), key, (5, 6))
        return p

    shapes = jax.eval_shape(params_of, jax.random.key(0))
    assert out["shape"] == (5, 6) and shapes[1][1][0]["W"].shape == (6, 7)
