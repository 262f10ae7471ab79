"""Training configurations: TOML files parsed, validated and turned into a model and trainer settings.

A config file (read with the standard library's :mod:`tomllib`)::

    name = "boston_two_hidden"    # optional; default: the file name without ".toml"
    seed = 20190501               # the one integer seed of the run
    seeds = 1                     # N > 1: N runs, seeds seed .. seed + N - 1, in one program
    epochs = 50
    batch_size = 32
    eval_every = 10               # evaluate, log a metrics line and checkpoint every N epochs
    early_stopping = "best"       # "best" | "book" | "off" (true = "best", false = "off")
    patience = 1                  # "best": evaluations without improvement before stopping
    dtype = "float64"             # or "float32"
    step_mode = "auto"            # or "scan" / "step" (see jaxscratch.train.loop.fit)
    loss = "mean_squared_error"   # a name from jaxscratch.runs.registry.CONFIG_LOSSES

    [data]
    name = "boston"               # boston | mnist | fashion-mnist | csv | npz

    [[layers]]                    # one table per layer, in order
    type = "dense"
    neurons = 13
    activation = "sigmoid"
    init = "normal"               # or "glorot"
    dropout = 1.0                 # keep probability, as the book's Dense(dropout=0.8)

    [[layers]]
    type = "dense"
    neurons = 1

    [optimizer]
    name = "sgd"                  # sgd | sgd_momentum | adam | rmsprop | adagrad
    lr = 0.01                     # plus the optimizer's own keywords, e.g. momentum = 0.9

    [schedule]                    # optional; default constant
    name = "linear"               # constant | linear | exponential (per epoch, see schedules.py)
    final_lr = 0.05

    [plugins]                     # optional: modules that register ops, activations, losses
    modules = ["my_ops"]          # then: [[layers]] type = "op", op = "my_op"; activation = ...

Early stopping (``early_stopping``) picks the policy of :mod:`jaxscratch.train.stopping`:
``"best"`` (:class:`~jaxscratch.train.stopping.EarlyStopping`: stop after ``patience``
evaluations in a row that do not improve and restore the best evaluated params), ``"book"``
(:func:`~jaxscratch.train.stopping.book_rule` every ``eval_every`` epochs: the book's rule, which
restores the params held at the start of the worse epoch) or ``"off"``.

Every table is checked against its schema (:data:`TOP_LEVEL`; :mod:`~jaxscratch.runs.datasets`,
:mod:`~jaxscratch.runs.layers`, :mod:`~jaxscratch.runs.registry`): an unknown key, a missing key,
a value of the wrong type or outside its range is a :class:`ConfigError` naming the key and the
allowed keys or values. :func:`load_config` returns the *resolved* config: a plain dict with every
default filled in and data paths made absolute, which :func:`dumps_toml` writes back as TOML and
:func:`validate` accepts again unchanged (the run directory keeps it, and ``--resume`` rebuilds
the run from it). ``jaxscratch train --help`` lists every key (:func:`reference`).

``seeds = N`` (default 1) trains N runs of the model at once, run ``i`` with ``seed + i``, as one
vmapped program (:func:`jaxscratch.train.many.fit_many`; :mod:`jaxscratch.runs.seeds`) in one run
directory. ``seeds = 1`` is dropped from the resolved config, so it is exactly a config without
the key (the same run, the same fingerprint). With N > 1 a setting ``fit_many`` cannot honour is
an error naming its key: ``early_stopping = "best"`` (the default; use "book" or "off") and
``step_mode = "step"``.
"""

from __future__ import annotations

import functools
import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxscratch import fileio
from jaxscratch.core import Loss, Op, apply, init_params, serial
from jaxscratch.optim.optimizers import Optimizer
from jaxscratch.optim.schedules import Schedule
from jaxscratch.runs import datasets, plugins
from jaxscratch.runs.datasets import DATA_SETS, Dataset, check_data, data_task
from jaxscratch.runs.layers import LAYERS, activations, build_layer, check_layers, user_token
from jaxscratch.runs.registry import (
    CLASSIFICATION_LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    build_optimizer,
    build_schedule,
    check_optimizer,
    check_schedule,
    get_loss,
    loss_names,
    optimizer_fields,
)
from jaxscratch.runs.schema import (
    REQUIRED,
    ConfigError,
    Field,
    check_table,
    choice_check,
    describe_fields,
    int_check,
    name_check,
    type_name,
)
from jaxscratch.runs.tomlio import dumps_toml, toml_value
from jaxscratch.train.metrics import accuracy, mae, rmse
from jaxscratch.train.stopping import EarlyStopping, book_rule

__all__ = [
    "ConfigError",
    "Dataset",
    "Model",
    "TOP_LEVEL",
    "build_model",
    "build_net",
    "build_optimizer",
    "build_schedule",
    "build_stopping",
    "data_task",
    "dumps_toml",
    "load_config",
    "load_data",
    "metric_fns",
    "optimizer_fields",
    "reference",
    "validate",
    "write_config",
]

STOPPING_POLICIES = ("best", "book", "off")


#: the most epochs a config may ask for (a typo such as 1000000000 is an error, not a week's run)
MAX_EPOCHS = 10**7
#: the most runs one ``seeds = N`` config may train at once
MAX_SEEDS = 4096


def _stopping_check(key: str, value: Any) -> str:
    """``"best"``, ``"book"`` or ``"off"``; ``true`` means ``"best"``, ``false`` ``"off"``."""
    if isinstance(value, bool):
        return "best" if value else "off"
    if not isinstance(value, str) or value not in STOPPING_POLICIES:
        raise ConfigError(
            f"{key}: unknown value {value!r}; allowed: 'best', 'book', 'off' (or true/false); "
            f"got {type_name(value)}"
        )
    return value


TOP_LEVEL: dict[str, Field] = {
    "name": Field(name_check, None, "the run name (default: the config file name)"),
    "seed": Field(int_check(0), REQUIRED, "an integer >= 0"),
    "epochs": Field(
        int_check(1, MAX_EPOCHS), REQUIRED, f"a positive integer, at most {MAX_EPOCHS}"
    ),
    "batch_size": Field(int_check(1), REQUIRED, "a positive integer"),
    "eval_every": Field(int_check(1), 10, "evaluate and checkpoint every N epochs"),
    "early_stopping": Field(_stopping_check, "best", "'best', 'book' or 'off'"),
    "patience": Field(int_check(1), 1, "evaluations without improvement before a 'best' stop"),
    "dtype": Field(choice_check(["float64", "float32"]), "float64"),
    "step_mode": Field(choice_check(["auto", "scan", "step"]), "auto"),
    # seeds sits here, not beside seed: the listed order of the keys before it is relied upon
    "seeds": Field(
        int_check(1, MAX_SEEDS), None, f"N runs, seeds seed .. seed + N - 1 (1 to {MAX_SEEDS})"
    ),
    "loss": Field(choice_check(loss_names), REQUIRED, "a loss name"),
    "data": Field(lambda k, v: v, REQUIRED, "a [data] table"),
    "layers": Field(check_layers, REQUIRED, "[[layers]] tables"),
    "optimizer": Field(check_optimizer, REQUIRED, "an [optimizer] table"),
    "schedule": Field(check_schedule, {"name": "constant"}),
    "plugins": Field(
        lambda k, v: v, None, "[plugins] modules = [names or .py files], path = [dirs]"
    ),
}


def _check_relations(cfg: dict[str, Any]) -> None:
    """What no single key can check: the schedule against lr/epochs, the loss against the data
    set's task, each layer's hyperparameters against its builder."""
    if cfg["schedule"]["name"] != "constant":
        try:
            build_schedule(cfg)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"schedule: {e}") from None
    task = data_task(cfg)
    if cfg["loss"] in CLASSIFICATION_LOSSES and task != "classification":
        raise ConfigError(
            f"loss: {cfg['loss']!r} needs a classification data set; data.name "
            f"{cfg['data']['name']!r} is {task} (set data.task = 'classification' for csv/npz)"
        )
    for i, layer in enumerate(cfg["layers"]):
        try:
            build_layer(layer, None)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"layers[{i}]: {e}") from None
    if cfg.get("seeds", 1) > 1:
        _check_seeds(cfg)


def _check_seeds(cfg: dict[str, Any]) -> None:
    """The settings fit_many cannot honour for ``seeds = N > 1``: an error naming the key."""
    n = cfg["seeds"]
    if cfg["early_stopping"] == "best":
        raise ConfigError(
            f"early_stopping: 'best' (the default) cannot be honoured with seeds = {n} "
            "(the runs train as one program, which has the book's rule but no patience rule); "
            "set early_stopping = 'book' or 'off'"
        )
    if cfg["step_mode"] == "step":
        raise ConfigError(
            f"step_mode: 'step' cannot be honoured with seeds = {n} (the runs train as one "
            "vmapped scan); set step_mode = 'auto' or 'scan'"
        )


def validate(raw: dict[str, Any], *, name: str | None = None, base_dir: Path | None = None) -> dict:
    """Check a parsed config and return the resolved one (defaults filled, paths absolute).

    ``name``: the run name when the config has none (the file stem). ``base_dir``: the directory
    relative data paths start from. Raises :class:`ConfigError` naming the key.
    """
    if isinstance(raw, dict) and "plugins" in raw:
        spec = plugins.resolve("plugins", raw["plugins"], base_dir)
        plugins.import_all(spec)  # first: the layers and the loss may name what they register
        raw = {**raw, "plugins": spec}
    cfg = check_table("", raw, TOP_LEVEL)
    if cfg.get("seeds") == 1:
        del cfg["seeds"]  # one run: exactly the config without the key (same fingerprint)
    cfg["data"] = check_data("data", raw["data"], base_dir)
    if "name" not in cfg:
        if name is None:
            raise ConfigError("name: missing required key (no config file name to default to)")
        cfg["name"] = name_check("name (from the file name)", name)
    _check_relations(cfg)
    order = ["name"] + [k for k in TOP_LEVEL if k != "name"]
    return {k: cfg[k] for k in order if k in cfg}


def write_config(path: str | Path, cfg: dict[str, Any]) -> None:
    """Write a (resolved) config as TOML, atomically; :func:`load_config` reads it back equal."""
    text = dumps_toml(cfg)
    fileio.atomic_write(Path(path), lambda f: f.write(text), mode="w")


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and :func:`validate` a TOML config file. Errors name the file and the key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config {p}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{p}: not a UTF-8 text file (byte 0x{e.object[e.start]:02x} at offset {e.start})"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML: {e}") from None
    stem = p.name[: -len(".toml")] if p.name.endswith(".toml") else p.stem
    try:
        return validate(raw, name=stem, base_dir=p.resolve().parent)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def load_data(cfg: dict[str, Any]) -> Dataset:
    """:func:`jaxscratch.runs.datasets.load_data`, then :func:`check_output_shape`: a config
    whose last layer does not fit its targets fails here, before anything trains or is saved."""
    ds = datasets.load_data(cfg)
    check_output_shape(cfg, ds)
    return ds


def check_output_shape(cfg: dict[str, Any], ds: Dataset) -> None:
    """``ValueError`` when the network's output rows differ from the data's target rows (an
    output layer wider or narrower than the targets). Shapes only: nothing is computed."""
    net, in_shape = build_net(cfg), tuple(ds.X_train.shape[1:])
    row = jax.ShapeDtypeStruct((1, *in_shape), np.dtype(cfg["dtype"]))

    def forward(key: jax.Array, x: Any) -> Any:
        return apply(net, init_params(net, key, in_shape)[1], x, train=False)[0]

    try:
        out = jax.eval_shape(forward, jax.random.key(0), row)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"layers: the network cannot take inputs of shape {in_shape}: {e}"
        ) from None
    got, want = tuple(out.shape[1:]), tuple(ds.y_train.shape[1:])
    if got != want:
        raise ValueError(
            f"layers: the last layer outputs rows of shape {got}, but the {cfg['data']['name']} "
            f"targets are rows of shape {want} (set the last layer's width to {want[-1]})"
            if want
            else f"layers: the network outputs rows of shape {got}, the targets are scalars"
        )


# ------------------------------------------------------------------------------------------------
# Building the model
# ------------------------------------------------------------------------------------------------


def jnp_dtype(cfg: dict[str, Any]) -> np.dtype:
    """The numpy dtype of the run (``float64`` or ``float32``)."""
    return np.dtype(cfg["dtype"])


def build_net(cfg: dict[str, Any]) -> Op:
    """``serial`` of the config's layers; ``params[i]`` belongs to ``layers[i]``.

    Memoised on (dtype, layers, the user ops registered now): the trainer caches its compiled programs per net object,
    so building the same config twice in one process (a resume, repeated runs in tests or a
    notebook) reuses them instead of recompiling.
    """
    return _build_net(json.dumps([cfg["dtype"], cfg["layers"]], sort_keys=True), user_token())


@functools.lru_cache(maxsize=32)
def _build_net(key: str, user_ops: tuple) -> Op:
    dtype, layers = json.loads(key)
    return serial(*[build_layer(spec, np.dtype(dtype)) for spec in layers])


def build_loss(cfg: dict[str, Any]) -> Loss:
    """The loss the config names (:func:`~jaxscratch.runs.registry.loss_names`)."""
    return get_loss(cfg["loss"])


def build_stopping(cfg: dict[str, Any]) -> EarlyStopping | Any | None:
    """The run's stopping policy: ``EarlyStopping(patience)`` ("best"), ``book_rule(eval_every)``
    ("book") or ``None`` ("off")."""
    policy = cfg["early_stopping"]
    if policy == "best":
        return EarlyStopping(patience=cfg["patience"])
    if policy == "book":
        return book_rule(every=cfg["eval_every"])
    return None


def metric_fns(task: str) -> dict[str, Callable]:
    """``{name: fn(pred, y)}`` from :mod:`jaxscratch.train.metrics`: accuracy for
    classification, MAE and RMSE for regression (module-level functions, so the trainer's
    compiled evaluator is reused across runs)."""
    if task == "classification":
        return {"accuracy": accuracy}
    return {"mae": mae, "rmse": rmse}


class Model(NamedTuple):
    """Everything :func:`jaxscratch.train.loop.fit` needs besides data and params."""

    net: Op
    loss: Loss
    optimizer: Optimizer
    schedule: Schedule


def build_model(cfg: dict[str, Any]) -> Model:
    """Net, loss, optimizer and learning-rate schedule of a resolved config."""
    return Model(
        build_net(cfg), build_loss(cfg), build_optimizer(cfg["optimizer"]), build_schedule(cfg)
    )


# ------------------------------------------------------------------------------------------------
# Reference of every key (for --help)
# ------------------------------------------------------------------------------------------------


def reference() -> str:
    """Every config key, generated from the schemas: required keys bare, defaults after ``=``,
    optional keys without a default in brackets."""
    lines = ["top level: " + describe_fields(TOP_LEVEL, "", toml_value)]
    lines.append("  early_stopping: " + ", ".join(map(repr, STOPPING_POLICIES)))
    lines.append(
        "    best: stop after `patience` evaluations without improvement; restore the best"
    )
    lines.append("    book: the book's rule every eval_every epochs; off: never stop early")
    lines.append(
        "  seeds: N (default 1) runs, run i with seed + i, trained at once in one run directory "
        "(early_stopping 'book' or 'off')"
    )
    lines.append("  loss: " + ", ".join(loss_names()))
    lines.append("[data] name = ...")
    for name, ds in DATA_SETS.items():
        lines.append(f"  {name}: {describe_fields(ds.fields, 'name', toml_value)}")
    lines.append("[[layers]] type = ...  (activation: " + ", ".join(activations()) + ")")
    for name, lt in LAYERS.items():
        lines.append(f"  {name}: {describe_fields(lt.fields, 'type', toml_value)}")
    lines.append("[optimizer] name = ...")
    for name in OPTIMIZERS:
        lines.append(f"  {name}: {describe_fields(optimizer_fields(name), 'name', toml_value)}")
    lines.append("[schedule] name = ...  (per epoch; default constant)")
    for name, fields in SCHEDULES.items():
        lines.append(f"  {name}: {describe_fields(fields, 'name', toml_value)}")
    lines.append("[plugins] modules = [...], path = ['.']  (see jaxscratch.runs.plugins)")
    return "\n".join(lines)
