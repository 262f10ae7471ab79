"""The ``[optimizer]`` and ``[schedule]`` tables and the ``loss`` key: what a config can name.

Every entry holds its factory (imported here, never looked up by a module path at run time).
The keys of ``[optimizer]`` are read off the factory's signature (:func:`optimizer_fields`), so a
new keyword of ``adam`` is a config key without an edit here; its range is checked by the factory
itself, through :mod:`jaxscratch.validate`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from jaxscratch.core import Loss, registered_losses
from jaxscratch.ops.losses import LOSSES
from jaxscratch.ops.rnn import sequence_softmax_cross_entropy
from jaxscratch.optim import schedules
from jaxscratch.optim.optimizers import Optimizer, adagrad, adam, rmsprop, sgd, sgd_momentum
from jaxscratch.runs.schema import (
    REQUIRED,
    ConfigError,
    Field,
    bool_check,
    check_table,
    float_check,
    int_check,
    str_check,
    tagged,
)

OPTIMIZERS: dict[str, Callable[..., Optimizer]] = {
    "sgd": sgd,
    "sgd_momentum": sgd_momentum,
    "adam": adam,
    "rmsprop": rmsprop,
    "adagrad": adagrad,
}

#: Every loss a config can name.
CONFIG_LOSSES: dict[str, Loss] = {
    **LOSSES,
    "sequence_softmax_cross_entropy": sequence_softmax_cross_entropy,
}
CLASSIFICATION_LOSSES = ("softmax_cross_entropy", "sequence_softmax_cross_entropy")

_FINAL_LR = Field(float_check(0.0, low_open=True), REQUIRED, "a positive number <= lr")
SCHEDULES: dict[str, dict[str, Field]] = {
    "constant": {"name": Field(str_check)},
    "linear": {"name": Field(str_check), "final_lr": _FINAL_LR},
    "exponential": {"name": Field(str_check), "final_lr": _FINAL_LR},
}


def user_losses() -> dict[str, Loss]:
    """The registered losses that are not jaxscratch's own (a plugin's): ``{name: loss}``."""
    return {k: e.loss for k, e in registered_losses().items() if k not in CONFIG_LOSSES}


def loss_names() -> list[str]:
    """The loss names a config may use: jaxscratch's, then the user's registered losses."""
    return list(CONFIG_LOSSES) + list(user_losses())


def get_loss(name: str) -> Loss:
    """The loss a config names (:func:`loss_names`)."""
    return CONFIG_LOSSES[name] if name in CONFIG_LOSSES else user_losses()[name]


def _default_check(default: Any) -> Callable[[str, Any], Any]:
    if isinstance(default, bool):
        return bool_check
    if isinstance(default, float):
        return float_check()
    if isinstance(default, int):
        return int_check()
    if isinstance(default, str):
        return str_check
    return lambda key, value: value


def optimizer_fields(name: str) -> dict[str, Field]:
    """The keys of ``[optimizer]`` for optimizer ``name``: ``name``, ``lr`` and the factory's own
    keyword arguments (from its signature, with its defaults; ranges are checked by the factory)."""
    fields = {
        "name": Field(str_check),
        "lr": Field(float_check(0.0, low_open=True), REQUIRED, "a positive number"),
    }
    for pname, p in inspect.signature(OPTIMIZERS[name]).parameters.items():
        if p.default is inspect.Parameter.empty:
            fields[pname] = Field(float_check(), REQUIRED)
        else:
            fields[pname] = Field(_default_check(p.default), p.default)
    return fields


def build_optimizer(spec: dict[str, Any]) -> Optimizer:
    """The optimizer of a validated ``[optimizer]`` table (``lr`` goes to the schedule)."""
    kwargs = {k: v for k, v in spec.items() if k not in ("name", "lr")}
    return OPTIMIZERS[spec["name"]](**kwargs)


def check_optimizer(key: str, value: Any) -> dict[str, Any]:
    """Validate ``[optimizer]``; the factory's own range errors become :class:`ConfigError`."""
    name, _ = tagged(key, value, "name", OPTIMIZERS)
    spec = check_table(key, value, optimizer_fields(name))
    try:
        build_optimizer(spec)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{key}: {e}") from None
    return spec


def check_schedule(key: str, value: Any) -> dict[str, Any]:
    """Validate ``[schedule]`` (its relation to ``lr`` and ``epochs`` is checked by the config)."""
    _, fields = tagged(key, value, "name", SCHEDULES)
    return check_table(key, value, fields)


def build_schedule(cfg: dict[str, Any]) -> schedules.Schedule:
    """``schedule(epoch_index) -> lr`` for the run: constant, or the book's per-epoch decay."""
    lr = cfg["optimizer"]["lr"]
    sched = cfg["schedule"]
    if sched["name"] == "constant":
        return schedules.constant(lr)
    return schedules.SCHEDULES[sched["name"]](lr, sched["final_lr"], cfg["epochs"])
