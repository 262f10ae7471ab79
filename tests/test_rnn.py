"""Recurrent cells, BPTT, sequence layers, the sequence loss and gradient clipping (chapter 6).

Every gradient test compares the hand-derived backward pass with jax.vjp (random cotangent,
float64, rtol 1e-10 leaf-relative, plus central finite differences) via jaxscratch.oracle.check; the
broken-op tests show that the oracle reports the book's GRU bug and a truncated BPTT.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.core import serial
from jaxscratch.ops import registry, rnn
from jaxscratch.oracle import check as gradcheck

RNN_ENTRIES = [
    "rnn_cell",
    "lstm_cell",
    "gru_cell",
    "sequence[rnn]",
    "sequence[lstm]",
    "sequence[gru]",
    "rnn_layer",
    "lstm_layer",
    "gru_layer",
    "stack[gru_layer,lstm_layer]",
]


def _example(name: str, seed: int = 0):
    return registry()[name].example(jax.random.key(seed))


# ----------------------------------------------------------------------------------- oracle


def test_oracle_examples_have_the_required_shapes():
    """batch >= 2, T >= 5, hidden != input size, non-zero initial states, float64."""
    for name in RNN_ENTRIES:
        params, x = _example(name)
        for leaf in jax.tree.leaves((params, x)):
            assert leaf.dtype == jnp.float64, name
        if name.endswith("_cell"):
            x_t, *states = x
            assert x_t.shape[0] >= 2 and all(s.shape[1] != x_t.shape[1] for s in states), name
            assert all(float(jnp.abs(s).min()) > 0 for s in states), name
        elif name.startswith("sequence"):
            xs, *states = x
            assert xs.shape[0] >= 2 and xs.shape[1] >= 5, name
            assert all(s.shape[1] != xs.shape[2] for s in states), name
            assert all(float(jnp.abs(s).min()) > 0 for s in states), name
        else:
            assert x.shape[0] >= 2 and x.shape[1] >= 5, name
            layers = params if isinstance(params, tuple) else (params,)
            for p in layers:
                for s in ("start_H", "start_C"):
                    if s in p:
                        assert float(jnp.abs(p[s]).min()) > 0, (name, s)
            assert layers[0]["start_H"].shape[1] != x.shape[2], name


def test_initial_state_gradient_is_checked_and_nonzero():
    """The layer's start_H / start_C gradients are real (non-zero) leaves that match jax.vjp."""
    op = registry()["lstm_layer"].op
    params, x = _example("lstm_layer")
    y, cache = op.forward(params, x)
    dy = jax.random.normal(jax.random.key(7), y.shape, jnp.float64)
    dparams, _ = op.backward(cache, dy)
    _, vjp = jax.vjp(lambda p: op.forward(p, x)[0], params)
    (oracle,) = vjp(dy)
    for s in ("start_H", "start_C"):
        assert float(jnp.abs(dparams[s]).max()) > 1e-3
        np.testing.assert_allclose(dparams[s], oracle[s], rtol=1e-10, atol=1e-13)


# ----------------------------------------------------------------------------------- broken ops


# the book's GRU update gate: a mutant in jaxscratch.book.errata, caught in tests/test_errata.py


def test_oracle_catches_bptt_without_the_hidden_to_hidden_path():
    def truncated_backward(W_h, h_prev, cache, dstate):
        dxp, dprev = rnn.RNN.recur_backward(W_h, h_prev, cache, dstate)
        return dxp, tuple(jnp.zeros_like(d) for d in dprev)  # drops dh_{t-1}

    broken = rnn.sequence(rnn.RNN._replace(name="rnn_truncated", recur_backward=truncated_backward))
    params, x = _example("sequence[rnn]")
    report = gradcheck.check_op(broken, params, x)
    assert not report.passed
    assert report.vjp_max_rel > 1e-3


# ----------------------------------------------------------------------------------- semantics


def test_sequence_layer_equals_a_python_loop_over_the_cell():
    """The scanned layer = start state, the cell op stepped by hand, then the projection."""
    op = registry()["lstm_layer"].op
    params, x = _example("lstm_layer")
    y, _ = op.forward(params, x)
    extra = ("W_v", "B_v", "start_H", "start_C")
    cell_params = {k: v for k, v in params.items() if k not in extra}
    h = jnp.broadcast_to(params["start_H"], (x.shape[0], params["start_H"].shape[1]))
    c = jnp.broadcast_to(params["start_C"], h.shape)
    outs = []
    for t in range(x.shape[1]):
        (h, c), _ = rnn.lstm_cell.forward(cell_params, (x[:, t], h, c))
        outs.append(h @ params["W_v"] + params["B_v"])
    np.testing.assert_allclose(y, jnp.stack(outs, axis=1), rtol=1e-12, atol=1e-14)


def test_cells_match_their_formulas():
    params, (x, h) = _example("rnn_cell")
    out, _ = rnn.rnn_cell.forward(params, (x, h))
    expected = jnp.tanh(jnp.concatenate([x, h], 1) @ params["W_f"] + params["B_f"])
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    params, (x, h) = _example("gru_cell")
    out, _ = rnn.gru_cell.forward(params, (x, h))
    s = jax.nn.sigmoid
    r = s(x @ params["W_xr"] + h @ params["W_hr"] + params["B_r"])
    u = s(x @ params["W_xu"] + h @ params["W_hu"] + params["B_u"])
    hb = jnp.tanh(x @ params["W_xh"] + (r * h) @ params["W_hh"] + params["B_h"])
    np.testing.assert_allclose(out, u * h + (1 - u) * hb, rtol=1e-12)


def test_layers_stack_with_serial_and_infer_shapes():
    key = jax.random.key(0)
    for first, second in (("rnn", "lstm"), ("lstm", "lstm"), ("gru", "lstm")):
        net = serial(rnn.recurrent_layer(first, 6, 5), rnn.recurrent_layer(second, 7, 3))
        shapes = {}

        def init(k, net=net, shapes=shapes):  # shapes only (jax.eval_shape): no compile
            shapes["out"], params = net.init(k, (8, 4))
            return params

        params = jax.eval_shape(init, key)
        assert shapes["out"] == (8, 3)
        assert params[0]["W_v"].shape == (6, 5) and params[1]["W_v"].shape == (7, 3)
        assert params[1]["W_f"].shape == (5 + 7, 7) and params[1]["start_C"].shape == (1, 7)
        y = jax.eval_shape(net.forward, params, jax.ShapeDtypeStruct((2, 8, 4), jnp.float64))[0]
        assert y.shape == (2, 8, 3)
    _, params = rnn.rnn_layer(3, 2).init(key, (5, 4))
    assert float(jnp.abs(params["start_H"]).max()) == 0.0  # zero initial state at init


def test_float32_smoke():
    params, (x, h) = _example("gru_cell")
    params, x, h = jax.tree.map(lambda a: a.astype(jnp.float32), (params, x, h))
    out, cache = rnn.gru_cell.forward(params, (x, h))
    assert out.dtype == jnp.float32
    dy = jax.random.normal(jax.random.key(3), out.shape, jnp.float32)
    dparams, (dx, dh) = rnn.gru_cell.backward(cache, dy)
    _, vjp = jax.vjp(lambda p, xx, hh: rnn.gru_cell.forward(p, (xx, hh))[0], params, x, h)
    oracle_p, oracle_x, oracle_h = vjp(dy)
    assert dx.dtype == dh.dtype == jnp.float32
    np.testing.assert_allclose(dh, oracle_h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dparams["W_hh"], oracle_p["W_hh"], rtol=1e-4, atol=1e-5)


def test_shape_errors_name_the_op_and_shapes():
    params, (x, h) = _example("rnn_cell")
    with pytest.raises(ValueError, match=r"rnn_cell: x_t\(3, 2\)"):
        rnn.rnn_cell.forward(params, (x[:, :2], h))
    with pytest.raises(ValueError, match=r"rnn_cell: h_prev\(2, 5\)"):
        rnn.rnn_cell.forward(params, (x, h[:2]))
    with pytest.raises(ValueError, match="expected the input tuple"):
        rnn.lstm_cell.forward(_example("lstm_cell")[0], (x, h))
    seq_params, (xs, h0) = _example("sequence[gru]")
    with pytest.raises(ValueError, match=r"sequence\[gru\]: expected x of shape"):
        rnn.gru_sequence.forward(seq_params, (xs[:, 0], h0))
    bad = dict(seq_params, W_hu=seq_params["W_hu"][:, :2])
    with pytest.raises(ValueError, match="W_hu has shape"):
        rnn.gru_sequence.forward(bad, (xs, h0))
    layer = rnn.lstm_layer(5, 3)
    with pytest.raises(ValueError, match=r"lstm_layer\[5,3\]: expects inputs of shape"):
        layer.init(jax.random.key(0), (4,))
    with pytest.raises(ValueError, match=r"rnn_layer: hidden must be an integer in \[1, inf\)"):
        rnn.rnn_layer(0, 3)
    with pytest.raises(TypeError, match="rnn_layer: out must be an integer"):
        rnn.rnn_layer(4, 3.0)
    with pytest.raises(ValueError, match="gru_layer: weight_scale must be positive"):
        rnn.gru_layer(4, 3, weight_scale=0.0)
    with pytest.raises(ValueError, match="unknown cell"):
        rnn.recurrent_layer("transformer", 4, 4)


def test_sequence_loss_is_the_mean_over_batch_and_time():
    logits, onehot = rnn._seq_sce_example(jax.random.key(5))
    value, _ = rnn.sequence_softmax_cross_entropy.forward(logits, onehot)
    logp = jax.nn.log_softmax(logits, axis=-1)
    expected = -jnp.mean(jnp.sum(onehot * logp, axis=-1))  # mean over (batch, T)
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    ids = jnp.argmax(onehot, axis=-1)
    value_ids, cache = rnn.sequence_softmax_cross_entropy.forward(logits, ids)
    np.testing.assert_allclose(value_ids, value, rtol=1e-12)
    grad = rnn.sequence_softmax_cross_entropy.backward(cache)
    n, T, _ = logits.shape
    np.testing.assert_allclose(grad, (jnp.exp(logp) - onehot) / (n * T), rtol=1e-12, atol=1e-15)
    huge = logits * 1e4
    v, c = rnn.sequence_softmax_cross_entropy.forward(huge, ids)
    assert np.isfinite(float(v)) and bool(
        jnp.all(jnp.isfinite(rnn.sequence_softmax_cross_entropy.backward(c)))
    )
    with pytest.raises(ValueError, match="sequence_softmax_cross_entropy: target shape"):
        rnn.sequence_softmax_cross_entropy.forward(logits, ids[:, :2])
    with pytest.raises(ValueError, match=r"expected logits of shape \(batch, T, k\)"):
        rnn.sequence_softmax_cross_entropy.forward(logits[0], onehot[0])


# ----------------------------------------------------------------------------------- clipping


# ----------------------------------------------------------------------------- integer ids


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_ids_are_the_one_hot_rows_they_stand_for(cell):
    """A layer fed ids (batch, T) computes what it computes on their one-hot rows: the same
    outputs and the same parameter gradients (to rounding: the scatter-add sums in another
    order), eagerly and jitted; dx is jax.vjp's float0 for an integer input. (The registry's
    ``lstm_layer[ids]`` puts the ids path through the oracle.)"""
    params, ids = _example(f"{cell}_layer")
    ids = jax.random.randint(jax.random.key(5), ids.shape[:2], 0, 3).at[0, :3].set(1)
    layer = registry()[f"{cell}_layer"].op
    assert jnp.issubdtype(ids.dtype, jnp.integer) and ids.shape == (3, 6)
    one_hot = jax.nn.one_hot(ids, 4, dtype=jnp.float64)
    y_ids, c_ids = layer.forward(params, ids)
    y_hot, c_hot = layer.forward(params, one_hot)
    np.testing.assert_array_equal(y_ids, y_hot)
    dy = jax.random.normal(jax.random.key(3), y_ids.shape, jnp.float64)
    d_ids, dx_ids = layer.backward(c_ids, dy)
    d_hot, _ = layer.backward(c_hot, dy)
    assert set(d_ids) == set(d_hot)
    for k in d_hot:
        np.testing.assert_allclose(d_ids[k], d_hot[k], rtol=1e-12, atol=1e-14, err_msg=k)
    assert dx_ids.dtype == jax.dtypes.float0 and dx_ids.shape == ids.shape
    jitted = jax.jit(lambda p, x: layer.backward(layer.forward(p, x)[1], dy)[0])(params, ids)
    for k in d_hot:
        np.testing.assert_allclose(jitted[k], d_hot[k], rtol=1e-12, atol=1e-14, err_msg=k)


def test_bad_ids_are_named_or_show_as_nan():
    params, ids = _example("lstm_layer[ids]")
    layer = registry()["lstm_layer[ids]"].op
    with pytest.raises(ValueError, match=r"sequence\[lstm\]: ids must lie in \[0, 4\).*\[0, 4\]"):
        layer.forward(params, ids.at[1, 2].set(4))
    with pytest.raises(ValueError, match=r"ids \(batch, T\), got \(3, 6, 1\)"):
        layer.forward(params, ids[..., None])
    y = jax.jit(lambda x: layer.forward(params, x)[0])(ids.at[1, 2].set(-1))
    assert bool(jnp.all(jnp.isnan(y[1, 2:]))) and bool(jnp.all(jnp.isfinite(y[0])))
