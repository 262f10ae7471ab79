"""Character-level language model: text, vocabulary, windows, training and sampling (chapter 6)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.book import charlm
from jaxscratch.optim import clipping, optimizers

PATTERN = "hello world, "  # the next character depends on more than the current one ('l', 'o')


# ----------------------------------------------------------------------------------- text


def test_default_text_is_deterministic_and_needs_no_download():
    a = charlm.default_text()
    assert a == charlm.default_text()
    assert len(a) == charlm.DEFAULT_MAX_CHARS
    assert charlm.load_text(None) == a
    assert charlm.default_text(1000) == a[:1000]
    assert charlm.build_vocabulary(a).size > 30
    assert "Python" in charlm.default_text_source()


def test_load_text_from_a_file_and_errors(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("to be or not to be", encoding="utf-8")
    assert charlm.load_text(f) == "to be or not to be"
    assert charlm.load_text(str(f), max_chars=5) == "to be"
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="load_text: .* is empty"):
        charlm.load_text(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="is not a file"):
        charlm.load_text(tmp_path / "missing.txt")


# ----------------------------------------------------------------------------------- vocabulary


def test_vocabulary_encode_decode_roundtrip():
    vocab = charlm.build_vocabulary("banana bread")
    assert vocab.chars == (" ", "a", "b", "d", "e", "n", "r")
    ids = charlm.encode(vocab, "bandana")
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, [2, 1, 5, 3, 1, 5, 1])
    assert charlm.decode(vocab, ids) == "bandana"
    with pytest.raises(ValueError, match="encode: character 'z'"):
        charlm.encode(vocab, "zebra")
    with pytest.raises(ValueError, match="decode: indices must be in 0..6"):
        charlm.decode(vocab, [7])


def test_vocabulary_errors():
    with pytest.raises(ValueError, match="build_vocabulary: the text is empty"):
        charlm.build_vocabulary("")
    with pytest.raises(ValueError, match="single symbol 'a'"):
        charlm.build_vocabulary("aaaa")
    with pytest.raises(TypeError, match="expected a str"):
        charlm.build_vocabulary(b"bytes")


# ----------------------------------------------------------------------------------- windows


def test_windows_are_shifted_slices_of_the_text():
    ids = jnp.arange(100, dtype=jnp.int32) * 3  # ids[i] = 3 i: each window is recognisable
    x, y = charlm.sample_windows(jax.random.key(0), ids, 64, 10)
    assert x.shape == y.shape == (64, 10)
    starts = np.asarray(x[:, 0]) // 3
    assert starts.min() >= 0 and starts.max() <= 100 - 11
    np.testing.assert_array_equal(x, 3 * (starts[:, None] + np.arange(10)))
    np.testing.assert_array_equal(y, x + 3)  # y = the next characters
    x2, _ = charlm.sample_windows(jax.random.key(0), ids, 64, 10)
    np.testing.assert_array_equal(x, x2)  # same key, same windows
    x3, _ = charlm.sample_windows(jax.random.key(1), ids, 64, 10)
    assert not np.array_equal(x, x3)
    # the shortest text: one possible window
    x, y = charlm.sample_windows(jax.random.key(2), ids[:11], 4, 10)
    np.testing.assert_array_equal(x, np.tile(3 * np.arange(10), (4, 1)))


def test_sequence_longer_than_the_text_is_an_error():
    ids = jnp.arange(10, dtype=jnp.int32)
    with pytest.raises(ValueError, match="sequence length 10 needs a text of at least 11"):
        charlm.sample_windows(jax.random.key(0), ids, 2, 10)
    vocab = charlm.build_vocabulary("abcdefghij")
    net = charlm.char_model("rnn", vocab.size, 4)
    with pytest.raises(ValueError, match="train_char_lm: sequence length 12"):
        charlm.train_char_lm(
            net, None, vocab, charlm.encode(vocab, "abcdefghij"), optimizer=optimizers.sgd(),
            lr=0.1, iterations=1, batch_size=2, seq_len=12, key=jax.random.key(0),
        )  # fmt: skip


def test_char_model_kinds():
    assert charlm.char_model("lstm", 10, 8).name == "lstm_layer[8,10]"
    stack = charlm.char_model("gru-lstm", 10, 8)
    shapes = {}

    def init(key):  # shapes only (jax.eval_shape): no compile
        shapes["out"], params = stack.init(key, (5, 10))
        return params

    params = jax.eval_shape(init, jax.random.key(0))
    assert shapes["out"] == (5, 10) and params[0]["W_v"].shape == (8, 8)
    assert params[1]["W_v"].shape == (8, 10) and "start_C" in params[1]
    with pytest.raises(ValueError, match="char_model: kind"):
        charlm.char_model("lstm-cnn", 10, 8)


def test_smooth_is_a_trailing_mean():
    np.testing.assert_allclose(charlm.smooth([1, 2, 3, 4, 5], 2), [1, 1.5, 2.5, 3.5, 4.5])
    np.testing.assert_allclose(charlm.smooth([4.0, 2.0], 50), [4.0, 3.0])


# ----------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained():
    text = PATTERN * 40
    vocab = charlm.build_vocabulary(text)
    ids = charlm.encode(vocab, text)
    net = charlm.char_model("rnn", vocab.size, 24, dtype=jnp.float32)
    _, params = net.init(jax.random.key(0), (len(PATTERN), vocab.size))
    calls = []
    opt = clipping.clip_elementwise(optimizers.adagrad(), 2.0)
    result = charlm.train_char_lm(
        net, params, vocab, ids, optimizer=opt, lr=0.1, iterations=300, batch_size=16,
        seq_len=len(PATTERN), key=jax.random.key(1), sample_every=150, sample_length=30,
        temperature=1.0, callback=calls.append,
    )  # fmt: skip
    return net, vocab, result, calls


def test_training_lowers_the_loss(trained):
    _, vocab, result, calls = trained
    losses = result.losses
    assert losses.shape == (300,) and np.all(np.isfinite(losses))
    assert abs(losses[0] - np.log(vocab.size)) < 0.5  # starts near the uniform guess
    assert losses[-20:].mean() < 0.25 * losses[0]
    assert [c["iteration"] for c in calls] == [150, 300]  # one compiled call per period
    assert [it for it, _ in result.samples] == [0, 150, 300]
    assert all(len(s) == 30 and set(s) <= set(PATTERN) for _, s in result.samples)


def test_sampling_continues_the_learned_pattern_and_is_seeded(trained):
    net, vocab, result, _ = trained
    cold = charlm.sample(
        net, result.params, vocab, jax.random.key(5), PATTERN, length=30, temperature=0.05
    )
    assert cold == (PATTERN * 3)[:30]  # the cycle continues after "hello world, "
    hot = [
        charlm.sample(
            net, result.params, vocab, jax.random.key(6), PATTERN, length=30, temperature=5.0
        )
        for _ in range(2)
    ]
    assert hot[0] == hot[1] and hot[0] != cold  # seeded; a high temperature scrambles it
    with pytest.raises(ValueError, match="temperature must be positive"):
        charlm.sample(net, result.params, vocab, jax.random.key(5), PATTERN, temperature=0.0)
    with pytest.raises(ValueError, match="the prime has 5 characters"):
        charlm.sample(net, result.params, vocab, jax.random.key(5), "hello", window=13)


def test_training_through_fit_equals_a_manual_loop_over_sample_windows():
    """train_char_lm runs inside fit; iteration i trains on sample_windows(fold_in(data_key, i))."""
    from jaxscratch.ops.rnn import sequence_softmax_cross_entropy
    from jaxscratch.train import make_step

    text = PATTERN * 10
    vocab = charlm.build_vocabulary(text)
    ids = charlm.encode(vocab, text)
    net = charlm.char_model("rnn", vocab.size, 8)
    _, params = net.init(jax.random.key(0), (5, vocab.size))
    opt, key = optimizers.adagrad(), jax.random.key(2)
    res = charlm.train_char_lm(
        net, params, vocab, ids, optimizer=opt, lr=0.05, iterations=4, batch_size=3, seq_len=5,
        key=key, sample_every=3, sample_length=4,
    )  # fmt: skip
    step = make_step(net, sequence_softmax_cross_entropy, opt)
    data_key = jax.random.split(key)[0]

    @jax.jit
    def manual(p, s, ids):
        losses = []
        for i in range(4):
            x, y = charlm.sample_windows(jax.random.fold_in(data_key, i), ids, 3, 5)
            p, s, v = step(p, s, jax.nn.one_hot(x, vocab.size), y, 0.05, None)
            losses.append(v)
        return p, jnp.stack(losses)

    p, losses = manual(params, opt.init(params), jnp.asarray(ids))
    np.testing.assert_allclose(res.losses, losses, rtol=1e-12)
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert [it for it, _ in res.samples] == [0, 3, 4]
    x, y = charlm.windows(ids, 5)
    assert x.shape == y.shape == (len(ids) - 5, 5)
    np.testing.assert_array_equal(x[7], ids[7:12])
    np.testing.assert_array_equal(y[7], ids[8:13])


@pytest.mark.slow  # its blocks are registry entries the default sweep checks
def test_the_transformer_model_passes_the_oracle():
    """char_model("transformer"): the composed hand backward of the whole model (embedding,
    positions, two causal blocks, norm, logits) equals jax.vjp and finite differences."""
    import jax
    import jax.numpy as jnp

    from jaxscratch.book import charlm
    from jaxscratch.oracle.check import check_op

    net = charlm.char_model("transformer", 6, 8)
    params = net.init(jax.random.key(0), (5, 6))[1]
    x = jax.nn.one_hot(jax.random.randint(jax.random.key(1), (2, 5), 0, 6), 6, dtype=jnp.float64)
    report = check_op(net, params, x)
    assert report.passed, report


def test_recurrent_models_read_ids_and_others_get_them_one_hot():
    """char_model's recurrent nets take the ids themselves (the first layer gathers its input
    rows: the numbers of the one-hot product); the transformer gets one-hot rows."""
    lstm = charlm.char_model("lstm-lstm", 7, 5, dtype=jnp.float64)
    assert charlm.takes_ids(lstm) and charlm.one_hot_inputs(lstm, 7, jnp.float64) is lstm
    tr = charlm.char_model("transformer", 7, 8, dtype=jnp.float64)
    assert not charlm.takes_ids(tr)
    assert charlm.one_hot_inputs(tr, 7, jnp.float64).name.startswith("one_hot[7]")
    _, params = lstm.init(jax.random.key(0), (6, 7))
    ids = jax.random.randint(jax.random.key(1), (2, 6), 0, 7)
    y_ids = lstm.forward(params, ids)[0]
    y_hot = lstm.forward(params, jax.nn.one_hot(ids, 7, dtype=jnp.float64))[0]
    np.testing.assert_array_equal(y_ids, y_hot)
