"""The ``[[layers]]`` table: every layer type a config can name, its keys and its builder.

Each :class:`LayerType` holds its builder function itself (imported here, not looked up by
name), so a renamed module is an ``ImportError`` when this module loads, never a type that
silently goes missing. ``build(spec, dtype) -> Op`` makes one op per config layer (a ``serial``
when the layer has parts, such as dense + dropout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jaxscratch.core import Op, registered, serial
from jaxscratch.ops import registry
from jaxscratch.ops.activations import ACTIVATIONS, get_activation
from jaxscratch.ops.attention import multi_head_attention, transformer_block
from jaxscratch.ops.batchnorm import batch_norm
from jaxscratch.ops.combinators import parallel, per_position, residual
from jaxscratch.ops.conv import conv_layer
from jaxscratch.ops.conv_transpose import conv_transpose2d
from jaxscratch.ops.dense import dense
from jaxscratch.ops.dropout import dropout
from jaxscratch.ops.embedding import embedding
from jaxscratch.ops.init import INITS
from jaxscratch.ops.norm import layer_norm
from jaxscratch.ops.pool import flatten, make_avg_pool2d, make_max_pool2d
from jaxscratch.ops.reshape import unflatten
from jaxscratch.ops.rnn import recurrent_layer
from jaxscratch.runs.schema import (
    REQUIRED,
    ConfigError,
    Field,
    bool_check,
    check_table,
    choice_check,
    float_check,
    int_check,
    str_check,
    tagged,
)


@dataclass(frozen=True)
class LayerType:
    """A layer type: its keys, ``build(spec, dtype) -> Op`` and a one-line description."""

    fields: dict[str, Field]
    build: Callable[[dict[str, Any], Any], Op]
    doc: str = ""


#: the ops jaxscratch itself registers (the oracle's examples); every other registered op is a
#: user's (a plugin's, or one registered in the same process) and a config may name it
BUILTIN_OPS = frozenset(registry())


def user_ops() -> dict[str, Op]:
    """The registered ops that are not jaxscratch's own: ``{name: op}``, in registration order."""
    return {k: e.op for k, e in registered().items() if k not in BUILTIN_OPS}


def _is_activation(op: Op) -> bool:
    return op.init is None and not op.stochastic


def activations() -> list[str]:
    """The activation names a layer may use: the built-in ones, then every registered user op
    without parameters (``init is None``) that is deterministic."""
    return list(ACTIVATIONS) + [k for k, op in user_ops().items() if _is_activation(op)]


def activation(name: str) -> str | Op:
    """The built-in activation's name, or the user's op registered as ``name``."""
    return name if name in ACTIVATIONS else user_ops()[name]


def user_token() -> tuple[tuple[str, int], ...]:
    """Identifies the user ops registered now (names and objects), so a net built from a config
    is rebuilt after ``register(..., replace=True)`` instead of reusing the old op."""
    return tuple((k, id(op)) for k, op in user_ops().items())


def _kernel_check(key: str, value: Any) -> int | list[int]:
    if isinstance(value, list):
        if len(value) != 2:
            raise ConfigError(f"{key}: expected an integer or [kh, kw], got {value!r}")
        return [int_check(1)(f"{key}[{i}]", v) for i, v in enumerate(value)]
    return int_check(1)(key, value)


def _shape_check(key: str, value: Any) -> list[int]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}: expected an array of positive integers, got {value!r}")
    return [int_check(1)(f"{key}[{i}]", v) for i, v in enumerate(value)]


def _padding_check(key: str, value: Any) -> str | int:
    if isinstance(value, str):
        return choice_check(["same", "valid"])(key, value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{key}: expected 'same', 'valid' or an integer >= 0, got {value!r}")
    return value


def _with_dropout(op: Op, spec: dict[str, Any]) -> Op:
    keep = spec.get("dropout", 1.0)
    if keep >= 1.0:
        return op
    drop = dropout(keep, inverted=spec.get("inverted_dropout", False))
    return serial(op, drop, name=f"{op.name}+{drop.name}")


def _build_dense(spec: dict[str, Any], dtype: Any) -> Op:
    op = dense(spec["neurons"], activation(spec["activation"]), init=spec["init"], dtype=dtype)
    return _with_dropout(op, spec)


def _build_conv(spec: dict[str, Any], dtype: Any) -> Op:
    kernel = spec["kernel"]
    return conv_layer(
        spec["filters"],
        tuple(kernel) if isinstance(kernel, list) else kernel,
        activation(spec["activation"]),
        init=spec["init"],
        dropout=spec["dropout"],
        flatten=spec["flatten"],
        stride=spec["stride"],
        padding=spec["padding"],
        bias=spec["bias"],
        dtype=dtype,
    )


def _build_recurrent(spec: dict[str, Any], dtype: Any) -> Op:
    op = recurrent_layer(
        spec["cell"],
        spec["hidden"],
        spec["out"],
        weight_scale=spec.get("weight_scale"),
        dtype=dtype,
    )
    return _with_dropout(op, spec)


_TYPE = Field(str_check)
_ACT = Field(choice_check(activations), "linear", "an activation name")
_INIT = Field(
    choice_check(lambda: list(INITS)), "normal", "'normal', 'glorot', 'he' or 'he_uniform'"
)
_KEEP_PROB = float_check(0.0, 1.0, low_open=True)
_DROPOUT = Field(_KEEP_PROB, 1.0, "keep probability in (0, 1]; 1 = no dropout")

_DENSE = {
    "type": _TYPE,
    "neurons": Field(int_check(1), REQUIRED, "a positive integer"),
    "activation": _ACT,
    "init": _INIT,
    "dropout": _DROPOUT,
    "inverted_dropout": Field(bool_check, False),
}
_CONV = {
    "type": _TYPE,
    "filters": Field(int_check(1), REQUIRED, "a positive integer (output channels)"),
    "kernel": Field(_kernel_check, REQUIRED, "an integer k or [kh, kw]"),
    "activation": _ACT,
    "init": _INIT,
    "dropout": _DROPOUT,
    "flatten": Field(bool_check, False),
    "stride": Field(int_check(1), 1),
    "padding": Field(_padding_check, "same"),
    "bias": Field(bool_check, False),
}
_RECURRENT = {
    "type": _TYPE,
    "cell": Field(choice_check(["rnn", "lstm", "gru"]), REQUIRED, "'rnn', 'lstm' or 'gru'"),
    "hidden": Field(int_check(1), REQUIRED, "a positive integer"),
    "out": Field(int_check(1), REQUIRED, "a positive integer (per-step outputs)"),
    "weight_scale": Field(
        float_check(0.0, low_open=True), None, "std of the weights (default Glorot)"
    ),
    "dropout": _DROPOUT,
    "inverted_dropout": Field(bool_check, False),
}

_POOL = {
    "type": _TYPE,
    "size": Field(int_check(1), 2),
    "stride": Field(int_check(1), None, "default: size (windows side by side)"),
}


def _sublayers(key: str, value: Any) -> list[dict[str, Any]]:
    return check_layers(key, value)


def _branches(key: str, value: Any) -> list[list[dict[str, Any]]]:
    if not isinstance(value, list) or len(value) < 2:
        raise ConfigError(f"{key}: expected an array of at least two layer arrays, got {value!r}")
    return [check_layers(f"{key}[{i}]", b) for i, b in enumerate(value)]


def _stack(specs: list[dict[str, Any]], dtype: Any) -> Op:
    ops = [build_layer(s, dtype) for s in specs]
    return ops[0] if len(ops) == 1 else serial(*ops)


def _build_parallel(spec: dict[str, Any], dtype: Any) -> Op:
    branches = [_stack(b, dtype) for b in spec["branches"]]
    return parallel(*branches, combine=spec["combine"], axis=spec["axis"])


def _build_conv_transpose(spec: dict[str, Any], dtype: Any) -> Op:
    kernel = spec["kernel"]
    op = conv_transpose2d(
        spec["filters"], tuple(kernel) if isinstance(kernel, list) else kernel,
        stride=spec["stride"], padding=spec["padding"], bias=spec["bias"], init=spec["init"],
        dtype=dtype,
    )  # fmt: skip
    act = activation(spec["activation"])
    return op if act == "linear" else serial(op, get_activation(act))


_BLOCKS: dict[str, LayerType] = {
    "conv_transpose2d": LayerType(
        {
            "type": _TYPE,
            "filters": Field(int_check(1), REQUIRED, "output channels"),
            "kernel": Field(_kernel_check, REQUIRED, "an integer k or [kh, kw]"),
            "stride": Field(int_check(1), 1),
            "padding": Field(int_check(0), 0, "pixels cropped from each side"),
            "bias": Field(bool_check, False),
            "init": Field(choice_check(lambda: list(INITS)), "glorot"),
            "activation": _ACT,
        },
        _build_conv_transpose,
        "transposed convolution (upsampling): (H - 1) stride + k - 2 padding, then activation",
    ),
    "residual": LayerType(
        {"type": _TYPE, "layers": Field(_sublayers, REQUIRED, "[[layers.layers]] tables")},
        lambda spec, dtype: residual(_stack(spec["layers"], dtype)),
        "x + f(x), f the inner layers (their output shape must equal their input's)",
    ),
    "parallel": LayerType(
        {
            "type": _TYPE,
            "branches": Field(_branches, REQUIRED, "an array of layer arrays"),
            "combine": Field(choice_check(["sum", "concat"]), "sum"),
            "axis": Field(int_check(), -1, "the concatenation axis"),
        },
        _build_parallel,
        "one input to every branch; outputs summed or concatenated (dx: the branches' sum)",
    ),
    "per_position": LayerType(
        {"type": _TYPE, "layers": Field(_sublayers, REQUIRED, "row layers, e.g. dense")},
        lambda spec, dtype: per_position(_stack(spec["layers"], dtype)),
        "row layers applied at every position of (batch, T, ...)",
    ),
    "layer_norm": LayerType(
        {"type": _TYPE, "eps": Field(float_check(0.0, low_open=True), 1e-5)},
        lambda spec, dtype: layer_norm(spec["eps"], dtype=dtype),
        "normalise each row's last axis, then gamma * x + beta",
    ),
    "embedding": LayerType(
        {
            "type": _TYPE,
            "vocab": Field(int_check(1), REQUIRED, "number of ids"),
            "dim": Field(int_check(1), REQUIRED, "vector size"),
            "init": _INIT,
        },
        lambda spec, dtype: embedding(spec["vocab"], spec["dim"], init=spec["init"], dtype=dtype),
        "integer ids (batch, T) -> vectors (batch, T, dim)",
    ),
    "attention": LayerType(
        {
            "type": _TYPE,
            "heads": Field(int_check(1), REQUIRED),
            "dim": Field(int_check(1), REQUIRED, "a multiple of heads"),
            "causal": Field(bool_check, False),
            "init": Field(choice_check(lambda: list(INITS)), "glorot"),
        },
        lambda spec, dtype: multi_head_attention(
            spec["heads"], spec["dim"], spec["causal"], init=spec["init"], dtype=dtype
        ),
        "multi-head scaled dot-product self-attention over (batch, T, d)",
    ),
    "transformer_block": LayerType(
        {
            "type": _TYPE,
            "heads": Field(int_check(1), REQUIRED),
            "dim": Field(int_check(1), REQUIRED, "the model width (the input's last axis)"),
            "hidden": Field(int_check(1), REQUIRED, "the MLP's width"),
            "causal": Field(bool_check, False),
            "activation": Field(choice_check(["relu", "tanh", "sigmoid"]), "relu"),
            "eps": Field(float_check(0.0, low_open=True), 1e-5),
        },
        lambda spec, dtype: transformer_block(
            spec["heads"],
            spec["dim"],
            spec["hidden"],
            spec["causal"],
            activation=spec["activation"],
            eps=spec["eps"],
        ),  # fmt: skip
        "pre-norm block: x + attention(norm(x)), then x + mlp(norm(x))",
    ),
}

LAYERS: dict[str, LayerType] = {
    "dense": LayerType(
        _DENSE,
        _build_dense,
        "the book's Dense layer: activation(x @ W + B), then dropout (keep probability)",
    ),
    "conv2d": LayerType(
        _CONV,
        _build_conv,
        "the book's Conv2D layer on NCHW images: conv -> activation -> dropout -> [flatten]",
    ),
    "recurrent": LayerType(
        _RECURRENT,
        _build_recurrent,
        "the book's RNN/LSTM/GRU layer: (batch, T, n_in) -> (batch, T, out), learned start state",
    ),
    "max_pool2d": LayerType(
        _POOL,
        lambda spec, dtype: make_max_pool2d(spec["size"], spec.get("stride")),
        "max pooling over size x size windows, every stride pixels (default: size)",
    ),
    "avg_pool2d": LayerType(
        _POOL,
        lambda spec, dtype: make_avg_pool2d(spec["size"], spec.get("stride")),
        "average pooling over size x size windows, every stride pixels (default: size)",
    ),
    "flatten": LayerType(
        {"type": _TYPE}, lambda spec, dtype: flatten, "(batch, ...) -> (batch, features)"
    ),
    "unflatten": LayerType(
        {"type": _TYPE, "shape": Field(_shape_check, REQUIRED, "e.g. [7, 28, 28]")},
        lambda spec, dtype: unflatten(tuple(spec["shape"])),
        "(batch, prod(shape)) -> (batch, *shape), e.g. a decoder's dense output to images",
    ),
    "dropout": LayerType(
        {
            "type": _TYPE,
            "keep_prob": Field(_KEEP_PROB, REQUIRED, "keep probability in (0, 1]"),
            "inverted": Field(bool_check, False),
        },
        lambda spec, dtype: dropout(spec["keep_prob"], inverted=spec["inverted"]),
        "dropout on its own (the book scales at inference; inverted scales in training)",
    ),
    "activation": LayerType(
        {"type": _TYPE, "activation": Field(choice_check(activations), REQUIRED)},
        lambda spec, dtype: get_activation(activation(spec["activation"])),
        "an activation on its own",
    ),
    "batch_norm": LayerType(
        {
            "type": _TYPE,
            "momentum": Field(float_check(0.0, 1.0, high_open=True), 0.9, "in [0, 1)"),
            "eps": Field(float_check(0.0, low_open=True), 1e-5, "a positive number"),
        },
        lambda spec, dtype: batch_norm(spec["momentum"], spec["eps"], dtype=dtype),
        "batch normalisation of (batch, D) or NCHW inputs; running statistics for inference",
    ),
    "op": LayerType(
        {
            "type": _TYPE,
            "op": Field(choice_check(lambda: list(user_ops())), REQUIRED, "a registered op"),
        },
        lambda spec, dtype: user_ops()[spec["op"]],
        "an op you registered (jaxscratch.register), e.g. from a [plugins] module",
    ),
}
LAYERS.update(_BLOCKS)


def check_layers(key: str, value: Any) -> list[dict[str, Any]]:
    """Validate the ``[[layers]]`` array: each table against its type's fields."""
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{key}: expected a non-empty array of tables ([[layers]]), got {value!r}"
        )
    out = []
    for i, table in enumerate(value):
        where = f"{key}[{i}]"
        name, layer_type = tagged(where, table, "type", LAYERS)
        out.append(check_table(where, table, layer_type.fields))
    return out


def build_layer(spec: dict[str, Any], dtype: Any) -> Op:
    """The op of one validated ``[[layers]]`` table (``dtype``: numpy dtype or ``None``)."""
    return LAYERS[spec["type"]].build(spec, dtype)
