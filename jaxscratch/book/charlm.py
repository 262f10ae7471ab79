"""Character-level language model (chapter 6): text, vocabulary, batches, training, sampling.

* Text: any file (:func:`load_text`) or :func:`default_text`, ~100 KB of English prose that every
  Python installation carries (the reference-manual topics of the standard library's ``pydoc_data``
  package, joined in sorted key order; fallback: the source of a fixed list of standard-library
  modules), read at run time, no download, deterministic for a given Python version.
* :class:`Vocabulary`: the sorted distinct characters; :func:`encode` / :func:`decode`.
* Batches: :func:`sample_windows` draws ``batch`` random windows from a ``jax.random`` key:
  ``x = ids[i : i + T]``, ``y = ids[i + 1 : i + T + 1]``; the network sees ``x`` one-hot.
* Models: :func:`char_model` builds ``"rnn"``, ``"lstm"``, ``"gru"`` or stacks such as
  ``"lstm-lstm"`` from :mod:`jaxscratch.ops.rnn` layers; the last layer's output is the vocabulary
  logits (batch, T, vocab).
* Training: :func:`train_char_lm` with :data:`jaxscratch.ops.rnn.sequence_softmax_cross_entropy`,
  any :class:`~jaxscratch.optim.optimizers.Optimizer` (AdaGrad, SGD, wrapped by
  :mod:`jaxscratch.optim.clipping`), through :func:`jaxscratch.train.fit`: the rows are the
  text's windows, an epoch is one iteration that draws its windows with replacement, and the
  ``sample_every`` iterations between two samples are one evaluation period (one compiled call),
  so the host sees the losses once per period.
* Sampling: :func:`sample` continues a prime of ``window`` characters, one character at a time:
  each step feeds the last ``window`` characters (from the learned initial state, exactly as in
  training) and draws the next from ``softmax(logits / temperature)``. Seeded by a key.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxscratch.core import Array, Op, Params, apply, serial
from jaxscratch.ops import rnn
from jaxscratch.ops.attention import transformer_block
from jaxscratch.ops.combinators import per_position
from jaxscratch.ops.dense import dense
from jaxscratch.ops.embedding import learned_positions
from jaxscratch.ops.norm import layer_norm
from jaxscratch.optim.optimizers import Optimizer
from jaxscratch.train import TrainingDiverged, TrainState, fit
from jaxscratch.validate import check_lr, check_positive_int

DEFAULT_MAX_CHARS = 100_000
#: fallback for :func:`default_text` when ``pydoc_data`` is missing (some distributions split it)
FALLBACK_MODULES = ("textwrap", "argparse", "calendar", "string", "fractions", "difflib")


# ---------------------------------------------------------------------------------------------
# text


def default_text(max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """``max_chars`` characters of English prose shipped with Python, read at run time.

    The ``pydoc_data.topics`` help texts (the language reference, as ``help("if")`` shows it),
    joined in sorted key order; if that package is absent, the source files of
    :data:`FALLBACK_MODULES` (found with ``inspect.getsourcefile``) concatenated. Deterministic for
    a given Python version. See :func:`default_text_source` for a description.
    """
    check_positive_int("default_text", "max_chars", max_chars)
    try:
        from pydoc_data.topics import topics

        text = "".join(topics[k] for k in sorted(topics))
    except ImportError:
        parts = []
        for name in FALLBACK_MODULES:
            path = inspect.getsourcefile(__import__(name))
            if path is not None:
                parts.append(Path(path).read_text(encoding="utf-8"))
        text = "".join(parts)
    if not text:
        raise RuntimeError("default_text: no standard-library text found; pass a text file")
    return text[:max_chars]


def default_text_source() -> str:
    """A one-line description of what :func:`default_text` reads on this Python."""
    import platform

    try:
        import pydoc_data.topics  # noqa: F401

        what = "pydoc_data.topics (Python reference-manual help texts, sorted by topic)"
    except ImportError:
        what = "standard-library sources: " + ", ".join(FALLBACK_MODULES)
    return f"{what}, Python {platform.python_version()}"


def load_text(path: str | Path | None = None, max_chars: int | None = None) -> str:
    """The text of the UTF-8 file ``path`` (whole, or its first ``max_chars`` characters), or
    :func:`default_text` when ``path`` is None. Empty text is a ``ValueError``."""
    if path is None:
        text = default_text(max_chars or DEFAULT_MAX_CHARS)
    else:
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"load_text: {str(p)!r} is not a file")
        text = p.read_text(encoding="utf-8")
        if max_chars is not None:
            check_positive_int("load_text", "max_chars", max_chars)
            text = text[:max_chars]
    if not text:
        raise ValueError(f"load_text: the text from {str(path or 'default_text()')!r} is empty")
    return text


# ---------------------------------------------------------------------------------------------
# vocabulary


class Vocabulary(NamedTuple):
    """The distinct characters of a text, sorted; index ``i`` is character ``chars[i]``.

    ``char_index()``: ``{character: index}`` (not ``index``, which tuple already has)."""

    chars: tuple[str, ...]

    @property
    def size(self) -> int:
        return len(self.chars)

    def char_index(self) -> dict[str, int]:
        """``{character: index}``."""
        return {c: i for i, c in enumerate(self.chars)}


def build_vocabulary(text: str) -> Vocabulary:
    """The sorted distinct characters of ``text``. Empty text or a single symbol: ``ValueError``."""
    if not isinstance(text, str):
        raise TypeError(f"build_vocabulary: expected a str, got {type(text).__name__}")
    if not text:
        raise ValueError("build_vocabulary: the text is empty")
    chars = tuple(sorted(set(text)))
    if len(chars) < 2:
        raise ValueError(
            f"build_vocabulary: the text has a single symbol {chars[0]!r}; a language model "
            "needs at least two"
        )
    return Vocabulary(chars)


def encode(vocab: Vocabulary, text: str) -> np.ndarray:
    """``text`` as int32 indices into ``vocab``, shape (len(text),). Unknown characters: ValueError."""
    index = vocab.char_index()
    try:
        return np.fromiter((index[c] for c in text), dtype=np.int32, count=len(text))
    except KeyError as e:
        raise ValueError(f"encode: character {e.args[0]!r} is not in the vocabulary") from None


def decode(vocab: Vocabulary, ids: Any) -> str:
    """The characters of the indices ``ids`` (any integer array or sequence)."""
    arr = np.asarray(ids).ravel()
    if arr.size and (arr.min() < 0 or arr.max() >= vocab.size):
        raise ValueError(
            f"decode: indices must be in 0..{vocab.size - 1}, got {arr.min()}..{arr.max()}"
        )
    return "".join(vocab.chars[int(i)] for i in arr)


# ---------------------------------------------------------------------------------------------
# batches


def check_windows(fn: str, n_chars: int, seq_len: int) -> None:
    """``ValueError`` unless a text of ``n_chars`` holds a window of ``seq_len`` + 1 characters."""
    check_positive_int(fn, "seq_len", seq_len)
    if n_chars < seq_len + 1:
        raise ValueError(
            f"{fn}: sequence length {seq_len} needs a text of at least {seq_len + 1} characters "
            f"(inputs and next-character targets), got {n_chars}"
        )


def sample_windows(key: Array, ids: Array, batch: int, seq_len: int) -> tuple[Array, Array]:
    """``batch`` random windows: x (batch, seq_len) and y = x shifted by one, both int ids.

    ids: (n,) the encoded text. Start ``i`` is uniform in ``[0, n - seq_len - 1]``;
    ``x[b] = ids[i : i + seq_len]``, ``y[b] = ids[i + 1 : i + seq_len + 1]``. Jit-compatible.
    """
    if ids.ndim != 1:
        raise ValueError(f"sample_windows: ids must have shape (n,), got {tuple(ids.shape)}")
    check_windows("sample_windows", ids.shape[0], seq_len)
    check_positive_int("sample_windows", "batch", batch)
    starts = jax.random.randint(key, (batch, 1), 0, ids.shape[0] - seq_len)
    pos = starts + jnp.arange(seq_len)[None, :]
    return ids[pos], ids[pos + 1]


# ---------------------------------------------------------------------------------------------
# models


def char_model(
    kind: str,
    vocab_size: int,
    hidden: int,
    *,
    weight_scale: float | None = None,
    dtype=None,
) -> Op:
    """A character model: ``kind`` names the cells bottom-up, joined by ``-``, or is
    ``"transformer"``.

    ``"lstm"``: one layer ``lstm_layer(hidden, vocab_size)``; ``"gru-lstm"``:
    ``gru_layer(hidden, hidden)`` then ``lstm_layer(hidden, vocab_size)`` (the book's stacks end
    with the layer whose projection gives the vocabulary logits). ``"transformer"``: a small
    causal transformer (not in the book): a linear token embedding, learned positions, two pre-norm
    blocks (4 heads, width ``hidden``, MLP ``2 * hidden``), a layer norm and a linear map to the
    logits (:func:`transformer_model`). x: (batch, T, vocab) one-hot -> logits (batch, T, vocab).
    """
    check_positive_int("char_model", "vocab_size", vocab_size)
    check_positive_int("char_model", "hidden", hidden)
    if kind == "transformer":
        return transformer_model(vocab_size, hidden, dtype=dtype)
    parts = kind.split("-") if isinstance(kind, str) else []
    if not parts or any(p not in rnn.CELLS for p in parts):
        raise ValueError(
            f"char_model: kind must be cells from {sorted(rnn.CELLS)} joined by '-', or "
            f"'transformer', got {kind!r}"
        )
    layers = []
    for n, p in enumerate(parts):
        out = vocab_size if n == len(parts) - 1 else hidden
        layers.append(rnn.recurrent_layer(p, hidden, out, weight_scale=weight_scale, dtype=dtype))
    net = layers[0] if len(layers) == 1 else serial(*layers, name=f"char_model[{kind},{hidden}]")
    _ID_NETS.add(net)  # the first recurrent layer gathers its input rows (see takes_ids)
    return net


def transformer_model(
    vocab_size: int, width: int, *, blocks: int = 2, heads: int = 4, dtype=None
) -> Op:
    """A causal character transformer from jaxscratch's hand-derived ops: one-hot (batch, T,
    vocab) -> per-position dense(width) -> + learned positions -> ``blocks`` pre-norm causal
    transformer blocks (``heads`` heads, MLP width 2 * width) -> layer norm -> per-position
    dense(vocab) logits (batch, T, vocab)."""
    layers = [per_position(dense(width, "linear", init="glorot", dtype=dtype)),
              learned_positions(dtype=dtype)]  # fmt: skip
    layers += [transformer_block(heads, width, 2 * width, causal=True) for _ in range(blocks)]
    layers += [layer_norm(dtype=dtype),
               per_position(dense(vocab_size, "linear", init="glorot", dtype=dtype))]  # fmt: skip
    return serial(*layers, name=f"char_model[transformer,{width}]")


def count_params(params: Params) -> int:
    """Total number of parameter entries."""
    return int(sum(np.prod(np.shape(a)) for a in jax.tree.leaves(params)))


# ---------------------------------------------------------------------------------------------
# training


class CharLMResult(NamedTuple):
    """After :func:`train_char_lm`: params and optimizer state; ``losses`` (iterations,) float64,
    one per iteration; ``samples`` ``[(iteration, text), ...]`` (iteration 0: before training)."""

    params: Params
    opt_state: Any
    losses: np.ndarray
    samples: list[tuple[int, str]]


def _dtype_of(params: Params):
    leaves = jax.tree.leaves(params)
    if not leaves:
        raise ValueError("train_char_lm: params are empty")
    return leaves[0].dtype


#: the recurrent models :func:`char_model` built: their first layer reads int ids itself
_ID_NETS: set[Op] = set()


def takes_ids(net: Op) -> bool:
    """Whether ``net`` reads int ids (batch, T) itself: the recurrent models of
    :func:`char_model`, whose first layer's input projection is a row gather (the same numbers
    as the product with one-hot rows, without multiplying the zeros; see
    :func:`jaxscratch.ops.rnn.sequence`). Other nets get one-hot inputs."""
    return net in _ID_NETS


@functools.lru_cache(maxsize=32)
def one_hot_inputs(net: Op, vocab_size: int, dtype: Any) -> Op:
    """``net`` fed int ids: x (batch, T) ints -> one-hot (batch, T, vocab) in ``dtype`` -> ``net``;
    a net that :func:`takes_ids` itself is returned as it is.

    Same params, cache and backward as ``net`` (the one-hot step has no parameters; the returned
    ``dx`` is the gradient with respect to the one-hot input, which training discards). The
    windows stay int ids in memory and become one-hot inside the compiled step. Cached per
    (net, vocab, dtype), so every :func:`train_char_lm` of a model shares one compiled program.
    """
    if takes_ids(net):
        return net
    dtype = np.dtype(dtype)

    def forward(params, x, **kw):
        return net.forward(params, jax.nn.one_hot(x, vocab_size, dtype=dtype), **kw)

    return Op(f"one_hot[{vocab_size}]->{net.name}", forward, net.backward, None, net.stochastic)


def windows(ids: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of the text: ``x[i] = ids[i : i + T]``, ``y[i] = ids[i + 1 : i + T + 1]``,
    both (n - T, T) int32 (the rows :func:`sample_windows` draws from)."""
    check_windows("windows", ids.shape[0], seq_len)
    starts = np.arange(ids.shape[0] - seq_len)[:, None] + np.arange(seq_len)[None, :]
    return ids[starts].astype(np.int32), ids[starts + 1].astype(np.int32)


def _check_ids(vocab: Vocabulary, ids: Any, seq_len: int) -> np.ndarray:
    ids_h = np.asarray(ids)
    if ids_h.ndim != 1 or not np.issubdtype(ids_h.dtype, np.integer):
        raise ValueError(
            f"train_char_lm: ids must be a 1-D integer array, got {ids_h.dtype} {ids_h.shape}"
        )
    check_windows("train_char_lm", ids_h.shape[0], seq_len)
    if ids_h.min() < 0 or ids_h.max() >= vocab.size:
        raise ValueError(f"train_char_lm: ids must be in 0..{vocab.size - 1}")
    return ids_h


def train_char_lm(
    net: Op,
    params: Params,
    vocab: Vocabulary,
    ids: Any,
    *,
    optimizer: Optimizer,
    lr: float,
    iterations: int,
    batch_size: int,
    seq_len: int,
    key: Array,
    sample_every: int | None = 100,
    sample_length: int = 200,
    temperature: float = 1.0,
    prime: str | None = None,
    opt_state: Any = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> CharLMResult:
    """Train a character model on random windows of ``ids`` (the encoded text, (n,) ints).

    Every iteration: ``batch_size`` windows of ``seq_len`` characters as ids (one-hot for a net
    that does not :func:`takes_ids`), the loss
    :data:`~jaxscratch.ops.rnn.sequence_softmax_cross_entropy` against the next characters, the
    hand-derived backward pass, ``optimizer.update`` with ``lr``. Training runs in
    :func:`jaxscratch.train.fit`: the rows are the text's windows (:func:`windows`), an epoch is
    one iteration drawing its windows with replacement, and an evaluation period is
    ``sample_every`` iterations (one compiled call). ``key`` is split into a data key (iteration
    ``i`` draws with ``fold_in(data_key, i)``, as :func:`sample_windows` does) and a sampling key
    (the sample after iteration ``i`` uses ``fold_in(sample_key, i)``), so runs are reproducible
    and two models trained with the same key see the same batches. Samples of ``sample_length``
    characters (:func:`sample`, ``prime``: default the text's first ``seq_len`` characters) are
    drawn at iteration 0, every ``sample_every`` iterations and at the end
    (``sample_every=None``: only at the start and the end). ``callback(info)`` gets
    ``iteration``, ``loss`` (mean over the period) and ``sample`` after each period. A non-finite
    loss raises :class:`~jaxscratch.train.TrainingDiverged` (a ``FloatingPointError``) naming
    the iteration (its epoch).
    """
    iterations = check_positive_int("train_char_lm", "iterations", iterations)
    batch_size = check_positive_int("train_char_lm", "batch_size", batch_size)
    sample_length = check_positive_int("train_char_lm", "sample_length", sample_length)
    if sample_every is not None:
        sample_every = check_positive_int("train_char_lm", "sample_every", sample_every)
    check_lr("train_char_lm", lr)
    _check_temperature("train_char_lm", temperature)
    ids_h = _check_ids(vocab, ids, seq_len)
    prime_text = prime if prime is not None else decode(vocab, ids_h[:seq_len])
    prime_ids = _prime_ids("train_char_lm", vocab, prime_text, seq_len)
    sample_key = jax.random.split(key)[1]  # [0] is fit's data key

    def draw(p: Params, it: int) -> str:
        k = jax.random.fold_in(sample_key, it)
        return sample(net, p, vocab, k, prime_ids, length=sample_length, temperature=temperature)

    samples, losses = [(0, draw(params, 0))], []

    def on_period(info: dict[str, Any]) -> None:
        it, period = info["epoch"], info["period_train_loss"]
        losses.extend(period)
        samples.append((it, draw(info["state"].params, it)))
        if callback is not None:
            callback({"iteration": it, "loss": float(np.mean(period)), "sample": samples[-1][1]})

    X, Y = windows(ids_h, seq_len)
    state = TrainState(params, optimizer.init(params) if opt_state is None else opt_state, 0, key)
    try:
        result = fit(
            one_hot_inputs(net, vocab.size, _dtype_of(params)),
            rnn.sequence_softmax_cross_entropy, optimizer, state, X, Y,
            epochs=iterations, batch_size=batch_size, lr=lr,
            eval_every=sample_every or iterations, replacement=True, steps_per_epoch=1,
            stopping=None, callback=on_period,
        )  # fmt: skip
    except TrainingDiverged as e:
        raise FloatingPointError(
            f"train_char_lm: the loss became {e.loss} at iteration {e.epoch}"
        ) from e
    return CharLMResult(result.params, result.opt_state, np.asarray(losses, np.float64), samples)


# ---------------------------------------------------------------------------------------------
# sampling


def _check_temperature(fn: str, temperature: Any) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: temperature must be a number, got {temperature!r}") from None
    if not math.isfinite(t) or t <= 0:
        raise ValueError(f"{fn}: temperature must be positive and finite, got {temperature!r}")
    return t


def _prime_ids(fn: str, vocab: Vocabulary, prime: str | Sequence[int] | Any, window: int) -> Array:
    if isinstance(prime, str):
        if len(prime) < window:
            raise ValueError(
                f"{fn}: the prime has {len(prime)} characters; sampling feeds windows of {window}, "
                f"so it needs at least {window}"
            )
        return jnp.asarray(encode(vocab, prime[-window:]))
    arr = jnp.asarray(prime)
    if arr.ndim != 1 or arr.shape[0] != window:
        raise ValueError(f"{fn}: prime ids must have shape ({window},), got {tuple(arr.shape)}")
    return arr


@functools.lru_cache(maxsize=32)
def _sample_program(net: Op, vocab_size: int, window: int, length: int):
    @jax.jit
    def run(params, key, prime_ids, temperature):
        dtype = _dtype_of(params)

        def body(win, k):
            x = win[None, :]  # (1, window) ids, one-hot (1, window, vocab) unless net takes ids
            x = x if takes_ids(net) else jax.nn.one_hot(x, vocab_size, dtype=dtype)
            logits = apply(net, params, x, train=False)[0][0, -1]
            c = jax.random.categorical(k, logits / temperature.astype(dtype))
            return jnp.concatenate([win[1:], c[None].astype(win.dtype)]), c

        _, chars = jax.lax.scan(body, prime_ids, jax.random.split(key, length))
        return chars

    return run


def sample(
    net: Op,
    params: Params,
    vocab: Vocabulary,
    key: Array,
    prime: str | Any,
    *,
    length: int = 200,
    window: int | None = None,
    temperature: float = 1.0,
) -> str:
    """``length`` characters continuing ``prime``, drawn from ``softmax(logits / temperature)``.

    Each step runs ``net`` on the last ``window`` characters (default: the prime's length) and
    samples the character after them; low temperatures approach the most likely character.
    ``prime``: a string (its last ``window`` characters are used; fewer is a ``ValueError``) or
    ``window`` int ids. One jitted ``lax.scan``; deterministic given ``key``.
    """
    length = check_positive_int("sample", "length", length)
    t = _check_temperature("sample", temperature)
    if window is None:
        window = len(prime) if isinstance(prime, str) else int(np.shape(prime)[0])
    window = check_positive_int("sample", "window", window)
    prime_ids = _prime_ids("sample", vocab, prime, window)
    run = _sample_program(net, vocab.size, window, length)
    chars = run(params, key, prime_ids, jnp.asarray(t))
    return decode(vocab, np.asarray(chars))


def smooth(losses: Any, window: int = 50) -> np.ndarray:
    """Trailing moving average: entry i is the mean of ``losses[max(0, i - window + 1) : i + 1]``."""
    x = np.asarray(losses, np.float64)
    window = check_positive_int("smooth", "window", window)
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(1, x.size + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)
