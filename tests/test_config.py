"""Config files: validation errors name the key and the allowed values; models and data build."""

from __future__ import annotations

import copy
import io
import math
import tomllib
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxscratch.core import init_params
from jaxscratch.runs import config
from jaxscratch.runs.config import ConfigError
from jaxscratch.train.stopping import BookRule, EarlyStopping

CONFIG_DIR = Path(__file__).resolve().parents[1] / "experiments" / "configs"

BASE = {
    "seed": 1,
    "epochs": 3,
    "batch_size": 16,
    "loss": "mean_squared_error",
    "data": {"name": "boston"},
    "layers": [
        {"type": "dense", "neurons": 4, "activation": "sigmoid"},
        {"type": "dense", "neurons": 1},
    ],
    "optimizer": {"name": "sgd", "lr": 0.01},
}


def _raw(**changes):
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    return raw


def _error(raw, base_dir=None) -> str:
    with pytest.raises(ConfigError) as e:
        config.validate(raw, name="t", base_dir=base_dir)
    return str(e.value)


def test_resolves_defaults_and_round_trips_through_toml():
    cfg = config.validate(_raw(), name="t")
    assert cfg["name"] == "t" and cfg["eval_every"] == 10 and cfg["early_stopping"] == "best"
    assert cfg["dtype"] == "float64" and cfg["schedule"] == {"name": "constant"}
    assert cfg["layers"][1] == {
        "type": "dense",
        "neurons": 1,
        "activation": "linear",
        "init": "normal",
        "dropout": 1.0,
        "inverted_dropout": False,
    }
    text = config.dumps_toml(cfg)
    again = tomllib.loads(text)
    assert again == cfg
    assert config.validate(again) == cfg  # the resolved config is a valid config


@pytest.mark.parametrize(
    "value, policy",
    [(True, "best"), (False, "off"), ("best", "best"), ("book", "book"), ("off", "off")],
)
def test_early_stopping_key_names_a_policy(value, policy):
    cfg = config.validate(_raw(early_stopping=value, eval_every=5), name="t")
    assert cfg["early_stopping"] == policy
    stopping = config.build_stopping(cfg)
    if policy == "off":
        assert stopping is None
    elif policy == "book":
        assert isinstance(stopping, BookRule) and stopping.every == 5
    else:
        assert isinstance(stopping, EarlyStopping) and stopping.restore == "best"


def test_dumps_toml_quotes_and_floats():
    obj = {"s": 'a "b"\\c\n', "f": [1e-05, 2.0, 1e300, float("inf")], "i": -3, "t": {"k-1": True}}
    assert tomllib.loads(config.dumps_toml(obj)) == obj


@pytest.mark.parametrize(
    "raw, expected",
    [
        (_raw(epoch=3), "epoch: unknown key; allowed keys: name, seed, epochs, batch_size"),
        (_raw(seed=None) if False else {k: v for k, v in BASE.items() if k != "seed"}, "seed: missing required key"),
        (_raw(epochs="10"), "epochs: value must be an integer, got str '10'"),
        (_raw(epochs=True), "epochs: value must be an integer, got bool True"),
        (_raw(batch_size=0), "batch_size: value must be an integer in [1, inf), got 0"),
        (_raw(dtype="float16"), "dtype: unknown value 'float16'; allowed: 'float64', 'float32'"),
        (_raw(loss="mae"), "loss: unknown value 'mae'; allowed: 'mean_squared_error', 'mse'"),
        (_raw(layers=[]), "layers: expected a non-empty array of tables"),
        (_raw(data={"name": "iris"}), "data.name: unknown value 'iris'; allowed: 'boston', 'mnist'"),
        (_raw(data={"name": "boston", "path": "x"}), "data.path: unknown key; allowed keys in data: name"),
        (_raw(optimizer={"name": "sgd"}), "optimizer.lr: missing required key"),
        (_raw(optimizer={"name": "sgd", "lr": -1}), "optimizer.lr: value must be a finite number in (0, inf), got -1"),
        (_raw(optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9}), "optimizer.momentum: unknown key; allowed keys in optimizer: name, lr"),
        (_raw(optimizer={"name": "sdg", "lr": 0.1}), "optimizer.name: unknown value 'sdg'; allowed: 'sgd', 'sgd_momentum'"),
        (_raw(schedule={"name": "cosine"}), "schedule.name: unknown value 'cosine'; allowed: 'constant', 'linear', 'exponential'"),
        (_raw(schedule={"name": "linear"}), "schedule.final_lr: missing required key"),
        (_raw(name="my run"), "name: 'my run' is not usable as a run name"),
        (_raw(data=[1]), "data: expected a table"),
        (_raw(early_stopping="always"), "early_stopping: unknown value 'always'; allowed: 'best', 'book', 'off'"),
        (_raw(seed=np.float64(1.0)), "seed: value must be an integer, got float64"),
    ],
)  # fmt: skip
def test_errors_name_the_key_and_the_allowed_values(raw, expected):
    assert expected in _error(raw)


def test_layer_errors_name_the_layer():
    layers = copy.deepcopy(BASE["layers"])
    layers[1]["nuerons"] = 3
    assert _error(_raw(layers=layers)).startswith("layers[1].nuerons: unknown key; allowed keys")
    layers = copy.deepcopy(BASE["layers"])
    layers[0]["activation"] = "sigmoidd"
    msg = _error(_raw(layers=layers))
    assert msg.startswith("layers[0].activation: unknown value 'sigmoidd'; allowed:")
    assert "'sigmoid'" in msg and "'tanh'" in msg and "'relu'" in msg
    layers[0] = {"type": "dense", "neurons": 3, "dropout": 1.5}
    assert "layers[0].dropout: value must be a finite number in (0, 1], got 1.5" in _error(
        _raw(layers=layers)
    )
    layers[0] = {"type": "densse", "neurons": 3}
    assert "layers[0].type: unknown value 'densse'; allowed: 'dense'" in _error(_raw(layers=layers))
    layers[0] = {"neurons": 3}
    assert "layers[0].type: missing required key" in _error(_raw(layers=layers))
    layers[0] = {"type": "dense", "neurons": 3, "init": "kaiming"}
    assert "layers[0].init: unknown value 'kaiming'; allowed: 'normal', 'glorot', 'he'" in _error(
        _raw(layers=layers)
    )


def test_optimizer_keywords_come_from_the_factory_and_are_range_checked():
    cfg = config.validate(_raw(optimizer={"name": "sgd_momentum", "lr": 0.1}), name="t")
    assert cfg["optimizer"] == {"name": "sgd_momentum", "lr": 0.1, "momentum": 0.9}
    msg = _error(_raw(optimizer={"name": "sgd_momentum", "lr": 0.1, "momentum": 1.5}))
    assert msg.startswith("optimizer: sgd_momentum: momentum must be a finite number in [0, 1)")
    assert set(config.optimizer_fields("adam")) == {"name", "lr", "b1", "b2", "eps"}


def test_schedule_is_checked_and_built():
    msg = _error(_raw(schedule={"name": "linear", "final_lr": 0.5}))
    assert msg.startswith("schedule: linear_decay: final_lr 0.5 exceeds lr 0.01")
    cfg = config.validate(_raw(schedule={"name": "exponential", "final_lr": 0.001}), name="t")
    sched = config.build_schedule(cfg)
    assert sched(0) == 0.01 and sched(2) == pytest.approx(0.001, rel=1e-12)


def test_softmax_cross_entropy_needs_a_classification_data_set():
    msg = _error(_raw(loss="softmax_cross_entropy"))
    assert msg.startswith("loss: 'softmax_cross_entropy' needs a classification data set")


def test_data_paths_resolve_relative_to_the_config(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,y\n1,2,3\n")
    cfg = config.validate(_raw(data={"name": "csv", "path": "d.csv"}), base_dir=tmp_path, name="t")
    assert cfg["data"]["path"] == str(tmp_path / "d.csv")
    assert cfg["data"]["target"] == -1 and cfg["data"]["test_size"] == 0.3
    msg = _error(_raw(data={"name": "csv", "path": "nope.csv"}), base_dir=tmp_path)
    assert msg.startswith("data.path: no such file:") and "nope.csv" in msg
    assert "data.path: missing required key" in _error(_raw(data={"name": "npz"}))


def test_load_config_names_the_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("seed = 1\nepochs = [\n")
    with pytest.raises(ConfigError, match=f"{p}: not valid TOML"):
        config.load_config(p)
    p.write_text(config.dumps_toml({**BASE, "epoch": 2}))
    with pytest.raises(ConfigError, match=f"{p}: epoch: unknown key"):
        config.load_config(p)
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load_config(tmp_path / "missing.toml")
    p.write_text(config.dumps_toml(BASE))
    assert config.load_config(p)["name"] == "bad"


def test_build_model_shapes_and_dropout():
    layers = [
        {"type": "dense", "neurons": 6, "activation": "tanh", "init": "glorot", "dropout": 0.8},
        {"type": "dense", "neurons": 1},
    ]
    cfg = config.validate(_raw(layers=layers), name="t")
    model = config.build_model(cfg)
    assert model.net.stochastic
    _, params = init_params(model.net, jax.random.key(0), (13,))
    assert (
        params[0][0]["W"].shape == (13, 6) and params[0][1] == () and params[1]["W"].shape == (6, 1)
    )
    assert config.build_net(cfg) is model.net  # memoised: the trainer's compile cache is reused
    cfg32 = dict(cfg, dtype="float32")
    with jax.enable_x64(False):
        _, p32 = _abstract_init(config.build_net(cfg32), (13,))
    assert p32[1]["W"].dtype == np.float32


def _abstract_init(net, in_shape):
    """(out_shape, params as ShapeDtypeStructs): init traced, not run (fast)."""
    out = {}

    def init(key):
        out["shape"], params = init_params(net, key, in_shape)
        return params

    params = jax.eval_shape(init, jax.random.key(0))
    return out["shape"], params


def test_conv_and_recurrent_layers_build():
    conv = [
        {"type": "conv2d", "filters": 3, "kernel": 3, "activation": "tanh", "flatten": True},
        {"type": "dense", "neurons": 2},
    ]
    raw = _raw(layers=conv, data={"name": "mnist", "flatten": False}, loss="softmax_cross_entropy")
    cfg = config.validate(raw, name="t")
    out_shape, params = _abstract_init(config.build_net(cfg), (1, 5, 5))
    assert out_shape == (2,) and params[0][0]["W"].shape == (3, 1, 3, 3)
    assert params[1]["W"].shape == (75, 2)
    rec = [{"type": "recurrent", "cell": "lstm", "hidden": 4, "out": 3}]
    cfg = config.validate(_raw(layers=rec), name="t")
    out_shape, params = _abstract_init(config.build_net(cfg), (7, 2))
    assert out_shape == (7, 3) and params[0]["W_v"].shape == (4, 3)
    bad = [{"type": "recurrent", "cell": "elman", "hidden": 4, "out": 3}]
    assert "layers[0].cell: unknown value 'elman'" in _error(_raw(layers=bad))
    bad = [{"type": "conv2d", "filters": 3, "kernel": [3, 0]}]
    assert "layers[0].kernel[1]: value must be an integer in [1, inf), got 0" in _error(
        _raw(layers=bad)
    )


def _csv(tmp_path, n=40, header=True):
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 2.0, size=(n, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 1.0
    lines = ["f1,f2,f3,target"] if header else []
    lines += [",".join(repr(float(v)) for v in row) for row in np.column_stack([X, y])]
    p = tmp_path / "data.csv"
    p.write_text("\n".join(lines) + "\n")
    return p, X, y


def test_csv_data_split_and_standardised_by_the_training_rows(tmp_path):
    p, X, y = _csv(tmp_path)
    cfg = config.validate(_raw(data={"name": "csv", "path": str(p), "target": "target"}), name="t")
    ds = config.load_data(cfg)
    assert ds.X_train.shape == (28, 3) and ds.X_test.shape == (12, 3) and ds.y_test.shape == (12, 1)
    np.testing.assert_allclose(ds.X_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(ds.X_train.std(axis=0), 1.0, rtol=1e-12)
    assert abs(ds.X_test.mean()) > 1e-6  # the test rows use the training statistics
    perm = np.random.RandomState(80718).permutation(40)
    np.testing.assert_array_equal(ds.y_test[:, 0], y[perm[:12]])
    assert len(ds.stats["feature_mean"]) == 3


def test_csv_errors_name_line_and_column(tmp_path):
    p, _, _ = _csv(tmp_path)
    cfg = config.validate(_raw(data={"name": "csv", "path": str(p), "target": "price"}), name="t")
    with pytest.raises(ValueError, match="data.target: no column 'price'"):
        config.load_data(cfg)
    p.write_text(p.read_text() + "1,2,x,4\n")
    cfg = config.validate(_raw(data={"name": "csv", "path": str(p)}), name="t")
    with pytest.raises(ValueError, match="line 42"):
        config.load_data(cfg)


def test_npz_classification_is_one_hot(tmp_path):
    rng = np.random.default_rng(1)
    p = tmp_path / "d.npz"
    np.savez(p, X=rng.normal(size=(30, 4)), y=rng.integers(0, 3, size=30))
    raw = _raw(
        data={"name": "npz", "path": str(p), "task": "classification"},
        loss="softmax_cross_entropy",
        layers=[{"type": "dense", "neurons": 3}],
    )
    ds = config.load_data(config.validate(raw, name="t"))
    assert ds.task == "classification" and ds.y_train.shape == (21, 3)
    np.testing.assert_array_equal(ds.y_train.sum(axis=1), 1.0)
    assert ds.stats["n_classes"] == 3 and ds.X_train.dtype == np.float64
    np.savez(p, X_train=np.zeros((3, 2)), y_train=np.zeros(3), X_test=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="expected arrays X_train, y_train, X_test, y_test"):
        config.load_data(config.validate(raw, name="t"))


def test_sequence_labels_become_one_hot_per_time_step(tmp_path):
    rng = np.random.default_rng(2)
    p = tmp_path / "seq.npz"
    X = rng.normal(size=(20, 6, 3))
    np.savez(p, X=X, y=(X[..., 0] > 0).astype(np.int64))
    raw = _raw(
        data={"name": "npz", "path": str(p), "task": "classification"},
        loss="sequence_softmax_cross_entropy",
        layers=[{"type": "recurrent", "cell": "gru", "hidden": 4, "out": 2}],
    )
    ds = config.load_data(config.validate(raw, name="t"))
    assert ds.X_train.shape == (14, 6, 3) and ds.y_train.shape == (14, 6, 2)
    np.testing.assert_array_equal(ds.y_train.argmax(-1), (ds.X_train[..., 0] > 0).astype(int))


def test_example_configs_validate_and_build(clean_registry):
    files = sorted(CONFIG_DIR.glob("*.toml"))
    names = [f.name for f in files]
    assert any(n.startswith("boston_") for n in names) and any(
        n.startswith("mnist_") for n in names
    )
    for f in files:
        cfg = config.load_config(f)
        assert cfg["name"] == f.stem
        assert f.name.startswith(cfg["data"]["name"].replace("-", "_") + "_") or f.name.startswith(
            cfg["data"]["name"] + "_"
        )
        model = config.build_model(cfg)
        assert model.schedule(cfg["epochs"] - 1) > 0


def test_unflatten_and_batch_norm_layers_build_and_check_their_keys():
    """type = "unflatten" (shape) and "batch_norm" (momentum, eps) build; bad values name the key."""
    raw = {
        "name": "t",
        "seed": 0,
        "epochs": 1,
        "batch_size": 4,
        "loss": "mean_squared_error",
        "data": {"name": "boston"},
        "layers": [
            {"type": "dense", "neurons": 12},
            {"type": "unflatten", "shape": [3, 4]},
            {"type": "flatten"},
            {"type": "batch_norm", "momentum": 0.8},
            {"type": "dense", "neurons": 1},
        ],
        "optimizer": {"name": "sgd", "lr": 0.1},
    }
    net = config.build_net(config.validate(raw))
    assert "unflatten[3x4]" in net.name and "batch_norm[0.8,1e-05]" in net.name
    assert net.update is not None  # stateful, through serial
    for layer, message in [
        ({"type": "unflatten", "shape": [0]}, r"layers\[1\].shape\[0\]"),
        ({"type": "unflatten", "shape": 12}, r"layers\[1\].shape: expected an array"),
        ({"type": "batch_norm", "eps": 0}, r"layers\[1\].eps"),
    ]:
        bad = {**raw, "layers": [raw["layers"][0], layer, {"type": "dense", "neurons": 1}]}
        with pytest.raises(config.ConfigError, match=message):
            config.validate(bad)


def test_block_layers_build_from_toml_and_train(tmp_path):
    """residual / parallel / layer_norm / avg_pool2d / attention / transformer_block tables build
    the ops of jaxscratch.ops.combinators & co; a residual + parallel Boston net trains."""
    text = """\
seed = 0
epochs = 2
batch_size = 64
eval_every = 1
early_stopping = "off"
loss = "mean_squared_error"
[data]
name = "boston"
[[layers]]
type = "dense"
neurons = 8
init = "he"
activation = "relu"
[[layers]]
type = "residual"
[[layers.layers]]
type = "dense"
neurons = 8
activation = "tanh"
[[layers]]
type = "layer_norm"
[[layers]]
type = "parallel"
combine = "concat"
branches = [[{type = "dense", neurons = 3}], [{type = "dense", neurons = 2, activation = "tanh"}]]
[[layers]]
type = "dense"
neurons = 1
[optimizer]
name = "sgd"
lr = 0.001
"""
    path = tmp_path / "blocks.toml"
    path.write_text(text)
    cfg = config.load_config(path)
    net = config.build_net(cfg)
    assert "residual" in net.name and "parallel" in net.name and "layer_norm" in net.name
    from jaxscratch.runs.session import train

    summary = train(cfg, tmp_path / "run", out=io.StringIO())
    assert summary["status"] == "completed" and math.isfinite(summary["final"]["eval_loss"])
    # the other block types validate and build
    others = [
        {"type": "avg_pool2d", "size": 3, "stride": 2},
        {"type": "conv_transpose2d", "filters": 2, "kernel": 3, "stride": 2, "activation": "relu"},
        {"type": "max_pool2d", "size": 3, "stride": 2},
        {"type": "attention", "heads": 2, "dim": 4, "causal": True},
        {"type": "transformer_block", "heads": 2, "dim": 4, "hidden": 8},
        {"type": "embedding", "vocab": 10, "dim": 4},
        {"type": "per_position", "layers": [{"type": "dense", "neurons": 3}]},
    ]
    from jaxscratch.runs.layers import build_layer, check_layers

    for spec in check_layers("layers", others):
        assert build_layer(spec, None).name
    with pytest.raises(
        config.ConfigError, match=r"layers\[0\].branches: expected an array of at least two"
    ):
        check_layers("layers", [{"type": "parallel", "branches": [[{"type": "flatten"}]]}])
    with pytest.raises(config.ConfigError, match=r"layers\[0\].layers\[0\].neurons: missing"):
        check_layers("layers", [{"type": "residual", "layers": [{"type": "dense"}]}])
