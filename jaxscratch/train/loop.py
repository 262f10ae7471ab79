"""The trainer: jit-compiled steps with hand-derived gradients, whole epochs as one ``lax.scan``.

One training step is ``forward -> loss -> loss backward -> network backward -> optimizer update``;
``jax.grad`` never appears here. :func:`fit` compiles the epochs between two evaluations into a
single call (``lax.scan`` over epochs, each a ``lax.scan`` over its full batches plus one step for a
shorter last batch), so Python dispatch costs one call per evaluation period; the data live on the
device and batches are gathered there. ``step_mode="step"`` instead dispatches one jitted step per
batch (still without host round trips), which is faster where XLA compiles a scanned body badly;
the default ``"auto"`` chooses by a measured rule (:func:`auto_step_mode`). ``mesh=`` trains
data-parallel (:mod:`jaxscratch.train.parallel`). :func:`enable_compilation_cache` opts in to JAX's
persistent compilation cache in a per-user cache directory.

Randomness: ``key`` is split into a data key and a dropout key; epoch ``e`` shuffles with
``fold_in(data_key, e)`` and batch ``b`` of epoch ``e`` drops out with
``fold_in(fold_in(dropout_key, e), b)``, so a run resumed at any epoch repeats an uninterrupted one.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxscratch.core import Array, Loss, Op, Params, apply
from jaxscratch.optim.optimizers import Optimizer, check_lr
from jaxscratch.train import parallel

LR = float | Sequence[float] | Callable[[int], float]


@dataclass
class History:
    """What :func:`fit` saw. Epoch numbers are 1-based (``epoch 10`` = after ten epochs).

    train_loss[i]: mean batch loss of epoch ``epochs[i]`` (weighted by batch size); lr[i]: its
    learning rate; eval_epochs / eval_loss / eval_metrics: one entry per evaluation.
    """

    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    eval_epochs: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    eval_metrics: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    restored_to_epoch: int | None = None


class FitResult(NamedTuple):
    """params and opt_state after training (restored ones after early stopping); the history."""

    params: Params
    opt_state: Any
    history: History


class TrainingDiverged(FloatingPointError):
    """A non-finite training loss. ``params``/``opt_state`` are those after the last finite epoch."""

    def __init__(self, epoch: int, batch: int, loss: float, params: Params, opt_state: Any):
        super().__init__(
            f"fit: training diverged at epoch {epoch}, batch {batch}: loss {loss}; "
            f"the parameters after epoch {epoch - 1} are in .params"
        )
        self.epoch, self.batch, self.loss = epoch, batch, loss
        self.params, self.opt_state = params, opt_state


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jaxscratch/xla`` (default ``~/.cache/jaxscratch/xla``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jaxscratch" / "xla"


def enable_compilation_cache(directory: str | Path | None = None) -> Path:
    """Opt in to JAX's persistent compilation cache, so a second run of the same program loads
    its compiled executables instead of compiling them (compilation dominates short runs).

    ``directory`` defaults to :func:`default_cache_dir` (a per-user cache directory; nothing is
    written anywhere else). Every program is cached, however quickly it compiled. Global: it
    sets ``jax_compilation_cache_dir`` for the whole process. Returns the directory.
    """
    path = Path(directory) if directory is not None else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def make_step(
    net: Op, loss: Loss, optimizer: Optimizer
) -> Callable[..., tuple[Params, Any, Array]]:
    """One training step: ``step(params, state, xb, yb, lr, key) -> (params, state, loss)``.

    Forward, loss, ``loss.backward``, ``net.backward`` (hand-derived), ``optimizer.update``.
    ``key`` is used only by stochastic nets (dropout). Pure; jit it or scan it.
    """

    def step(params, state, xb, yb, lr, key):
        pred, cache = apply(net, params, xb, key=key, train=True)
        value, lcache = loss.forward(pred, yb)
        grads, _ = net.backward(cache, loss.backward(lcache))
        params, state = optimizer.update(grads, state, params, lr)
        return params, state, value

    return step


STEP_MODES = ("auto", "scan", "step")


def _channels_first_conv(jaxpr: Any) -> bool:
    """Whether a (closed) jaxpr, or any jaxpr nested in it, holds a convolution whose input or
    output keeps its feature axis anywhere but last (NCHW-like)."""
    inner = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in getattr(inner, "eqns", ()):
        if eqn.primitive.name == "conv_general_dilated":
            dn = eqn.params["dimension_numbers"]
            nd = len(dn.lhs_spec)
            if dn.lhs_spec[1] != nd - 1 or dn.out_spec[1] != nd - 1:
                return True
        for value in eqn.params.values():
            subs = value if isinstance(value, tuple | list) else (value,)
            for sub in subs:
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    if _channels_first_conv(sub):
                        return True
    return False


def auto_step_mode(
    net: Op,
    loss: Loss,
    optimizer: Optimizer,
    params: Params,
    opt_state: Any,
    X: Any,
    y: Any,
    batch_size: int,
    key: Array | None = None,
) -> str:
    """The step mode ``fit(step_mode="auto")`` uses: ``"scan"``, except ``"step"`` on the CPU
    when a training step contains a channels-first (NCHW) ``lax.conv_general_dilated``.

    Why: XLA:CPU rewrites a convolution to the channels-last layout its convolution kernel is fast
    at (NHWC, ``b01f``) in a flat program, but leaves it in the given NCHW layout (``bf01``)
    inside a while loop, i.e. inside ``lax.scan``. Measured on the book's CNN (2 CPU cores): the
    kernel-gradient convolution takes ~80 ms per batch in a scan against ~1 ms in NHWC, and the
    whole scanned epoch ran 3-4x slower than one dispatch per batch. Convolutions written as
    shifted multiply-adds or im2col matmuls (``conv2d(method="taps" | "im2col")``), channels-last
    ones, and networks without convolutions have no such penalty and get the scan, which saves
    the per-batch dispatch. The rule traces one step (no compilation); cached per configuration.
    """
    platform = jax.devices()[0].platform
    if platform != "cpu":
        return "scan"
    x_spec = jax.ShapeDtypeStruct((batch_size, *X.shape[1:]), X.dtype)
    y_spec = jax.ShapeDtypeStruct((batch_size, *y.shape[1:]), y.dtype)
    return _auto_step_mode(net, loss, optimizer, x_spec, y_spec, params, opt_state, key)


def _auto_step_mode(net, loss, optimizer, x_spec, y_spec, params, opt_state, key) -> str:
    cache_key = (net, loss, optimizer, x_spec, y_spec, jax.tree.structure(params))
    if cache_key in _AUTO_MODES:
        return _AUTO_MODES[cache_key]
    step = make_step(net, loss, optimizer)
    lr = jax.ShapeDtypeStruct((), _lr_dtype(params))
    use_key = key if net.stochastic else None
    jaxpr = jax.make_jaxpr(step)(params, opt_state, x_spec, y_spec, lr, use_key)
    mode = "step" if _channels_first_conv(jaxpr) else "scan"
    if len(_AUTO_MODES) > 256:
        _AUTO_MODES.clear()
    _AUTO_MODES[cache_key] = mode
    return mode


_AUTO_MODES: dict[Any, str] = {}


def predict(net: Op, params: Params, X: Any, *, batch_size: int | None = None) -> Array:
    """Inference-mode forward pass (dropout off), optionally in batches. X: (n, ...) -> (n, ...)."""
    fn = _predict_fn(net)
    if batch_size is None or batch_size >= len(X):
        return fn(params, X)
    parts = [fn(params, X[i : i + batch_size]) for i in range(0, len(X), batch_size)]
    return jnp.concatenate(parts, axis=0)


@functools.lru_cache(maxsize=64)
def _predict_fn(net: Op) -> Callable:
    return jax.jit(lambda p, x: apply(net, p, x, train=False)[0])


def _lr_for_epoch(lr: LR, epoch: int) -> float:
    if callable(lr):
        value = lr(epoch)
    elif isinstance(lr, int | float):
        value = lr
    else:
        seq = list(lr)
        if epoch >= len(seq):
            raise ValueError(
                f"fit: the lr sequence has {len(seq)} entries, epoch {epoch + 1} needs one"
            )
        value = seq[epoch]
    check_lr("fit", value)
    return float(value)


def _lr_dtype(params: Params) -> np.dtype:
    """The narrowest floating dtype among the params (float32 params get float32 learning rates,
    so ``p - lr * g`` keeps their dtype even with ``jax_enable_x64``); JAX's default float if none.
    """
    floats = [
        np.dtype(leaf.dtype)
        for leaf in jax.tree.leaves(params)
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.floating)
    ]
    if not floats:
        return np.dtype(jnp.result_type(float))
    return min(floats, key=lambda d: d.itemsize)


def _check_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"fit: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


_ALIGN = 64  # bytes: XLA's CPU client aliases host memory aligned like this instead of copying


def _to_device(a: Any) -> Array:
    """A device array for the data. JAX arrays pass through; a numpy array is copied once into a
    64-byte-aligned host buffer (numpy's copy is several times faster than the transfer path of
    ``jnp.asarray``) which the device array then aliases; already aligned arrays are not copied
    (``fit`` uses its data only while it runs)."""
    if isinstance(a, jax.Array):
        return a
    h = np.asarray(a)
    try:
        dtype = np.dtype(jax.dtypes.canonicalize_dtype(h.dtype))
    except (TypeError, ValueError):
        return jnp.asarray(h)
    if h.dtype == dtype and h.flags.c_contiguous and h.ctypes.data % _ALIGN == 0:
        return jax.device_put(h)
    if h.nbytes < (1 << 20):  # small arrays: the plain path
        return jnp.asarray(h, dtype)
    raw = np.empty(h.size * dtype.itemsize + _ALIGN, np.uint8)
    offset = -raw.ctypes.data % _ALIGN
    buf = raw[offset : offset + h.size * dtype.itemsize].view(dtype).reshape(h.shape)
    np.copyto(buf, h, casting="same_kind")
    return jax.device_put(buf)


def _check_data(what: str, X: Any, y: Any) -> tuple[Array, Array]:
    Xh, yh = np.asarray(X), np.asarray(y)  # a view, no copy, for arrays already on the CPU
    if Xh.ndim == 0 or Xh.shape[0] == 0:
        raise ValueError(f"fit: {what} X is empty (shape {Xh.shape})")
    if yh.ndim == 0 or Xh.shape[0] != yh.shape[0]:
        raise ValueError(f"fit: {what} X has {Xh.shape[0]} rows but y has shape {yh.shape}")
    for name, arr in (("X", Xh), ("y", yh)):
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.isfinite(arr)):
            raise ValueError(f"fit: {what} {name} holds NaN or infinite values")
    return _to_device(X), _to_device(y)


def fit(
    net: Op,
    loss: Loss,
    optimizer: Optimizer,
    params: Params,
    X: Any,
    y: Any,
    *,
    epochs: int,
    batch_size: int,
    key: Array | None = None,
    lr: LR = 0.01,
    eval_data: tuple[Any, Any] | None = None,
    eval_every: int = 10,
    stop_every: int | None = None,
    early_stopping: bool = True,
    metrics: dict[str, Callable[[Array, Array], Array]] | None = None,
    opt_state: Any = None,
    start_epoch: int = 0,
    shuffle: bool = True,
    permutations: Any = None,
    step_mode: str = "auto",
    best_eval_loss: float = math.inf,
    callback: Callable[[dict[str, Any]], None] | None = None,
    mesh: Mesh | int | None = None,
) -> FitResult:
    """Train ``net`` on ``(X, y)`` with hand-derived gradients; return params, state and history.

    X: (n, ...) and y: (n, ...) with the same n. Each epoch shuffles (``shuffle``; or takes row
    ``e`` of ``permutations``, an (epochs, n) integer array, for the book-compatible mode) and runs
    ``ceil(n / batch_size)`` steps, the last one on the ``n % batch_size`` remaining rows.
    ``lr``: a number, a per-epoch sequence, or ``schedule(epoch_index) -> lr``.

    Every ``eval_every`` epochs (and after the last) the loss on ``eval_data`` and any ``metrics``
    (``fn(pred, y) -> scalar``, jit-compatible) are computed. With ``early_stopping``, an
    evaluation that does not improve on the best so far restores the params **and** optimizer state
    held at the start of that epoch and stops (the book's rule). ``stop_every`` (a multiple of
    ``eval_every``; default: every evaluation) makes only the evaluations at multiples of it take
    part in early stopping, e.g. a per-epoch display with the book's every-10-epochs rule
    (``eval_every=1, stop_every=10``). ``start_epoch`` and ``opt_state``
    resume a run (``best_eval_loss``: the best evaluation so far, for early stopping). A
    non-finite training loss raises :class:`TrainingDiverged`, carrying the params after the last
    finite epoch. ``callback(info)`` is called on the host after each evaluation period with
    ``epoch``, ``train_loss``, ``lr``, ``eval_loss`` and metrics (when evaluated),
    ``best_eval_loss``, ``stopped_early``, and the current ``params`` and ``opt_state`` (for
    checkpoints).

    ``step_mode``: ``"scan"`` (the epochs of an evaluation period in one compiled call),
    ``"step"`` (one compiled call per batch) or ``"auto"`` (the default: :func:`auto_step_mode`
    picks one; the results are the same, only the speed differs). ``mesh``: data parallelism (see
    :mod:`jaxscratch.train.parallel`): a :class:`jax.sharding.Mesh` with a ``"data"`` axis or a device
    count. Every batch is split along ``"data"`` and params are replicated; the batch size must be a
    multiple of the device count (``ValueError`` otherwise), and a short last batch that is not
    runs replicated. Results equal one device's up to the order of floating-point sums.
    """
    epochs = _check_int("epochs", epochs)
    batch_size = _check_int("batch_size", batch_size)
    eval_every = _check_int("eval_every", eval_every)
    stop_every = eval_every if stop_every is None else _check_int("stop_every", stop_every)
    if stop_every % eval_every:
        raise ValueError(
            f"fit: stop_every ({stop_every}) must be a multiple of eval_every ({eval_every})"
        )
    start_epoch = _check_int("start_epoch", start_epoch, 0)
    if step_mode not in STEP_MODES:
        raise ValueError(f"fit: step_mode must be one of {STEP_MODES}, got {step_mode!r}")
    mesh = parallel.resolve_mesh(mesh)
    Xd, yd = _check_data("training", X, y)
    n = int(Xd.shape[0])
    bs = min(batch_size, n)
    if mesh is not None:
        parallel.check_batch_size("fit", bs, mesh)
    n_full, rem = divmod(n, bs)
    sizes = np.array([bs] * n_full + ([rem] if rem else []), dtype=np.float64)
    if eval_data is not None:
        Xe, ye = _check_data("eval", *eval_data)
    perms_host = None
    if permutations is not None:
        perms_host = np.asarray(permutations)
        if perms_host.shape != (epochs, n) or not np.issubdtype(perms_host.dtype, np.integer):
            raise ValueError(
                f"fit: permutations must be an integer array of shape ({epochs}, {n}), "
                f"got {perms_host.dtype} {perms_host.shape}"
            )
        perms_host = perms_host.astype(np.int32)
    if key is None and ((shuffle and permutations is None) or net.stochastic):
        raise ValueError("fit: a jax.random key is required to shuffle or to run dropout")
    lrs = [_lr_for_epoch(lr, e) for e in range(epochs)]
    if opt_state is None:
        opt_state = optimizer.init(params)
    if mesh is not None:
        Xd, yd, params, opt_state, key = parallel.replicate((Xd, yd, params, opt_state, key), mesh)

    if step_mode == "auto":
        step_mode = auto_step_mode(net, loss, optimizer, params, opt_state, Xd, yd, bs, key)
    use_rows = perms_host is not None
    prog = _program(net, loss, optimizer, n, bs, shuffle, use_rows, mesh)
    float_dtype = _lr_dtype(params)

    def run(params, state, first: int, count: int):
        # host-built inputs: no eager device ops (each would compile a small program)
        ids = np.arange(first, first + count, dtype=np.int32)
        chunk_lrs = np.asarray(lrs[first : first + count], dtype=float_dtype)
        # without explicit permutations, an empty row per epoch keeps one scan signature
        rows = perms_host[first : first + count] if use_rows else np.zeros((count, 0), np.int32)
        if step_mode == "step":
            return prog.run_stepwise(params, state, Xd, yd, ids, chunk_lrs, rows, key)
        return prog.run_chunk(params, state, Xd, yd, ids, chunk_lrs, rows, key)

    if eval_data is not None:
        evaluate = _evaluator(net, loss, tuple(sorted((metrics or {}).items())))

    history = History()
    best = float(best_eval_loss)
    epoch = start_epoch
    while epoch < epochs:
        next_eval = min((epoch // eval_every + 1) * eval_every, epochs)
        count = next_eval - epoch
        params_before = (params, opt_state)
        p, s, p_prev, s_prev, losses = run(params, opt_state, epoch, count)
        losses_h = np.asarray(losses)
        bad = np.argwhere(~np.isfinite(losses_h))
        if bad.size:
            j, b = (int(v) for v in bad[0])
            good_p, good_s = params_before
            if j > 0:
                good_p, good_s, *_ = run(*params_before, epoch, j)
            raise TrainingDiverged(epoch + j + 1, b + 1, float(losses_h[j, b]), good_p, good_s)
        params, opt_state = p, s
        for j in range(count):
            history.epochs.append(epoch + j + 1)
            history.train_loss.append(float(np.dot(losses_h[j], sizes) / n))
            history.lr.append(lrs[epoch + j])
        epoch = next_eval
        info: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": history.train_loss[-1],
            "lr": lrs[epoch - 1],
        }
        if eval_data is not None:
            value, mvals = evaluate(params, Xe, ye)
            value = float(value)
            history.eval_epochs.append(epoch)
            history.eval_loss.append(value)
            history.eval_metrics.append({k: float(v) for k, v in mvals.items()})
            info.update(eval_loss=value, **history.eval_metrics[-1])
            if epoch % stop_every == 0 or stop_every == eval_every:
                if early_stopping and not value < best:
                    params, opt_state = p_prev, s_prev
                    history.stopped_early = True
                    history.restored_to_epoch = epoch - 1
                best = min(best, value)
        if callback is not None:
            info.update(
                params=params,
                opt_state=opt_state,
                best_eval_loss=best,
                stopped_early=history.stopped_early,
            )
            callback(info)
        if history.stopped_early:
            break
    return FitResult(params, opt_state, history)


class _Program(NamedTuple):
    run_chunk: Callable[..., Any]
    run_stepwise: Callable[..., Any]


@functools.lru_cache(maxsize=64)
def _program(
    net: Op,
    loss: Loss,
    optimizer: Optimizer,
    n: int,
    bs: int,
    shuffle: bool,
    use_rows: bool,
    mesh: Mesh | None = None,
) -> _Program:
    """The compiled epoch runners for one (model, data size, batch size, mesh) configuration.

    Cached, so a second :func:`fit` with the same configuration does not recompile. With a mesh,
    each gathered batch is constrained to the ``"data"`` axis and the updated params and state to
    be replicated; XLA partitions the step and inserts the gradient all-reduce.
    """
    step = make_step(net, loss, optimizer)
    n_full, rem = divmod(n, bs)

    def split_key(key):
        if key is None:
            return None, None
        data_key, drop_key = jax.random.split(key)
        return data_key, (drop_key if net.stochastic else None)

    def epoch_perm(epoch, perm_row, data_key):
        if use_rows:
            return perm_row
        if shuffle:
            return jax.random.permutation(jax.random.fold_in(data_key, epoch), n)
        return jnp.arange(n)

    def batch_key(drop_key, epoch, b):
        if drop_key is None:
            return None
        return jax.random.fold_in(jax.random.fold_in(drop_key, epoch), b)

    def gathered_step(params, state, Xd, yd, idx, lr, key):
        xb, yb = parallel.shard_batch((Xd[idx], yd[idx]), mesh)
        params, state, value = step(params, state, xb, yb, lr, key)
        params, state = parallel.constrain_replicated((params, state), mesh)
        return params, state, value

    def run_epoch(params, state, Xd, yd, perm, lr, epoch, drop_key):
        def body(carry, inp):
            p, s = carry
            b, idx = inp
            p, s, value = gathered_step(p, s, Xd, yd, idx, lr, batch_key(drop_key, epoch, b))
            return (p, s), value

        losses = []
        if n_full:
            idx = perm[: n_full * bs].reshape(n_full, bs)
            (params, state), full = jax.lax.scan(body, (params, state), (jnp.arange(n_full), idx))
            losses.append(full)
        if rem:
            idx = perm[n_full * bs :]
            params, state, value = gathered_step(
                params, state, Xd, yd, idx, lr, batch_key(drop_key, epoch, n_full)
            )
            losses.append(value[None])
        return params, state, jnp.concatenate(losses)

    @jax.jit
    def run_chunk(params, state, Xd, yd, epoch_ids, chunk_lrs, perm_rows, key):
        """Epochs ``epoch_ids`` in one scan; also returns the params at the last epoch's start."""
        data_key, drop_key = split_key(key)

        def body(carry, inp):
            p, s, _, _ = carry
            e, lr_e, row = inp
            perm = epoch_perm(e, row, data_key)
            p2, s2, losses = run_epoch(p, s, Xd, yd, perm, lr_e, e, drop_key)
            return (p2, s2, p, s), losses

        init = (params, state, params, state)
        (p, s, p_prev, s_prev), losses = jax.lax.scan(body, init, (epoch_ids, chunk_lrs, perm_rows))
        return p, s, p_prev, s_prev, losses

    @functools.partial(jax.jit, static_argnames="size")
    def batch_step(params, state, Xd, yd, perm, b, lr, epoch, drop_key, *, size):
        idx = jax.lax.dynamic_slice_in_dim(perm, b * bs, size)
        return gathered_step(params, state, Xd, yd, idx, lr, batch_key(drop_key, epoch, b))

    @jax.jit
    def epoch_setup(epoch, perm_row, key):
        data_key, drop_key = split_key(key)
        return epoch_perm(epoch, perm_row, data_key), drop_key

    batch_ids: list[Array] = []  # device scalars, made once: no host->device copy per step

    def run_stepwise(params, state, Xd, yd, epoch_ids, chunk_lrs, perm_rows, key):
        """The same epochs, one jitted dispatch per batch (no host round trip until the end)."""
        n_batches = n_full + (1 if rem else 0)
        if not batch_ids:
            batch_ids.extend(jax.device_put([np.int32(b) for b in range(n_batches)]))
        all_losses = []
        p_prev, s_prev = params, state
        for j in range(epoch_ids.shape[0]):
            p_prev, s_prev = params, state
            e, lr_j = jax.device_put((epoch_ids[j], chunk_lrs[j]))
            perm, drop_key = epoch_setup(e, perm_rows[j], key)
            vals = []
            for b in range(n_batches):
                size = bs if b < n_full else rem
                params, state, v = batch_step(
                    params, state, Xd, yd, perm, batch_ids[b], lr_j, e, drop_key, size=size
                )
                vals.append(v)
            all_losses.append(jnp.stack(vals))
        return params, state, p_prev, s_prev, jnp.stack(all_losses)

    return _Program(run_chunk, run_stepwise)


@functools.lru_cache(maxsize=64)
def _evaluator(net: Op, loss: Loss, metrics: tuple[tuple[str, Callable], ...]) -> Callable:
    """``evaluate(params, X, y) -> (loss, {metric: value})``, cached per model.

    Two compiled programs: the network's inference forward pass, the same one :func:`predict`
    uses (so predicting on the evaluation set afterwards compiles nothing), and the loss with the
    metrics, which depends only on the loss and the prediction shape (shared by every network).
    """
    forward = _predict_fn(net)
    score = _scorer(loss, metrics)

    def evaluate(params, X, y):
        return score(forward(params, X), y)

    return evaluate


@functools.lru_cache(maxsize=64)
def _scorer(loss: Loss, metrics: tuple[tuple[str, Callable], ...]) -> Callable:
    @jax.jit
    def score(pred, y):
        return loss.forward(pred, y)[0], {k: f(pred, y) for k, f in metrics}

    return score
