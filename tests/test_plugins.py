"""Your own ops everywhere: ``register(..., replace=True)``, ``[plugins]`` in configs, ``jaxscratch
gradcheck --import``, ``jaxscratch list``, and a plugin run that resumes, evaluates and notices a
changed plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import pytest

from jaxscratch import core, fileio
from jaxscratch.core import Loss, Op, register, register_loss
from jaxscratch.runs import config
from jaxscratch.runs.cli import main
from jaxscratch.runs.layers import user_ops

PLUGIN = '''\
"""A plugin: a softplus activation, a learnable per-feature scale and a mean absolute error."""

import jax
import jax.numpy as jnp

import jaxscratch as js

def _sp_fwd(params, x):
    return jnp.logaddexp(x, 0.0), x

def _sp_bwd(x, dy):
    return (), dy * jax.nn.sigmoid(x){BUG}

js.register(
    js.Op("{P}softplus", _sp_fwd, _sp_bwd),
    lambda key: ((), jax.random.normal(key, (5, 3), jnp.float64)),
)

def _sc_fwd(params, x):
    return x * params["W"][None, :], (params["W"], x)

def _sc_bwd(cache, dy):
    W, x = cache
    return {{"W": (dy * x).sum(0)}}, dy * W[None, :]

js.register(
    js.Op("{P}scale", _sc_fwd, _sc_bwd, init=lambda key, shape: (shape, {{"W": jnp.ones(shape)}})),
    lambda key: (
        {{"W": jax.random.normal(key, (3,), jnp.float64)}},
        jax.random.normal(jax.random.fold_in(key, 1), (5, 3), jnp.float64),
    ),
)

def _mae_fwd(pred, target):
    return jnp.abs(pred - target).mean(), pred - target

js.register_loss(
    js.Loss("{P}mae", _mae_fwd, lambda d: jnp.sign(d) / d.size),
    lambda key: (
        jax.random.normal(key, (6, 1), jnp.float64),
        jax.random.normal(jax.random.fold_in(key, 1), (6, 1), jnp.float64) + 3.0,
    ),
)
'''

CONFIG = """\
seed = 3
epochs = 4
batch_size = 64
eval_every = 2
early_stopping = "off"
loss = "{P}mae"

[plugins]
modules = ["{MODULE}"]

[data]
name = "boston"

[[layers]]
type = "dense"
neurons = 5
activation = "{P}softplus"

[[layers]]
type = "op"
op = "{P}scale"

[[layers]]
type = "dense"
neurons = 1

[optimizer]
name = "sgd"
lr = 0.01
"""


@pytest.fixture(autouse=True)
def _clean(clean_registry):
    """Every test here registers ops; none of them outlives its test (conftest.clean_registry)."""
    yield


def _plugin(directory: Path, module: str, bug: str = "") -> Path:
    """Write plugin ``module`` (names prefixed ``module.``) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{module}.py"
    path.write_text(PLUGIN.format(P=f"{module}.", BUG=bug))
    return path


def _config(directory: Path, module: str, entry: str | None = None) -> Path:
    path = directory / "run.toml"
    path.write_text(CONFIG.format(P=f"{module}.", MODULE=entry or module))
    return path


def _op(name: str) -> Op:
    return Op(name, lambda p, x: (x, None), lambda c, dy: ((), dy))


# ------------------------------------------------------------------------------------------------
# register(..., replace=True)
# ------------------------------------------------------------------------------------------------


def test_registering_another_op_under_a_taken_name_says_how_to_replace_it():
    """A second, different op under one name is refused with a message naming replace=True;
    the same op again is a no-op; replace=True replaces the entry."""
    first, second = _op("plug_x"), _op("plug_x")
    register(first)
    register(first)  # a re-import of the same object
    with pytest.raises(ValueError, match=r"'plug_x' is already registered.*replace=True"):
        register(second)
    assert core.registered()["plug_x"].op is first
    register(second, replace=True)
    assert core.registered()["plug_x"].op is second
    with pytest.raises(TypeError, match="replace must be True or False"):
        register(second, replace="yes")


def test_register_loss_replaces_only_when_asked():
    """The loss registry follows the same rule as the op registry."""
    a = Loss("plug_l", lambda p, t: (p, None), lambda c: c)
    b = Loss("plug_l", lambda p, t: (p, None), lambda c: c)
    register_loss(a)
    with pytest.raises(ValueError, match="replace=True"):
        register_loss(b)
    register_loss(b, replace=True)
    assert core.registered_losses()["plug_l"].loss is b


def test_a_replaced_op_is_not_served_from_the_net_cache():
    """build_net memoises per config; after register(..., replace=True) it builds with the new op."""
    register(_op("plug_y"))
    raw = {
        "name": "t",
        "seed": 0,
        "epochs": 1,
        "batch_size": 4,
        "loss": "mean_squared_error",
        "data": {"name": "boston"},
        "layers": [{"type": "op", "op": "plug_y"}, {"type": "dense", "neurons": 1}],
        "optimizer": {"name": "sgd", "lr": 0.1},
    }
    cfg = config.validate(raw)
    old = config.build_net(cfg)
    new_op = _op("plug_y")
    register(new_op, replace=True)
    assert config.build_net(cfg) is not old
    assert user_ops()["plug_y"] is new_op


# ------------------------------------------------------------------------------------------------
# [plugins] in configs
# ------------------------------------------------------------------------------------------------


def test_a_config_names_a_plugins_ops_activation_and_loss(tmp_path):
    """[plugins] modules = ["plug_a"] imports the module from the config's directory; its op,
    activation and loss are then valid names, and the resolved config keeps an absolute path."""
    _plugin(tmp_path, "plug_a")
    cfg = config.load_config(_config(tmp_path, "plug_a"))
    assert cfg["plugins"] == {"modules": ["plug_a"], "path": [str(tmp_path.resolve())]}
    assert cfg["layers"][1] == {"type": "op", "op": "plug_a.scale"}
    model = config.build_model(cfg)
    assert model.loss.name == "plug_a.mae"
    # the resolved config round-trips unchanged
    again = tmp_path / "again.toml"
    config.write_config(again, cfg)
    assert config.load_config(again) == cfg


def test_a_plugin_given_as_a_file_path_is_resolved_against_the_config(tmp_path):
    """A .py entry relative to the config's directory is imported and stored absolute."""
    _plugin(tmp_path / "lib", "plug_b")
    cfg = config.load_config(_config(tmp_path, "plug_b", entry="lib/plug_b.py"))
    assert cfg["plugins"]["modules"] == [str((tmp_path / "lib" / "plug_b.py").resolve())]
    assert "plug_b.scale" in user_ops()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "ModuleNotFoundError: No module named 'plug_missing'"),
        ("raise RuntimeError('no GPU here')", "RuntimeError: no GPU here"),
        ("def broken(:\n", "SyntaxError"),
    ],
    ids=["missing", "raises", "syntax-error"],
)
def test_a_plugin_that_cannot_be_imported_is_one_config_error(tmp_path, capsys, body, message):
    """A missing module, one that raises, one that does not parse: exit 2 and one line naming the
    key, the module and the exception; no run directory is created."""
    if body is not None:
        (tmp_path / "plug_missing.py").write_text(body)
    cfg = _config(tmp_path, "plug_missing")
    code = main(["train", str(cfg), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "plugins.modules[0]: cannot import plugin 'plug_missing'" in err
    assert message in err
    assert not (tmp_path / "run").exists()


def test_plugins_table_errors_name_the_key(tmp_path):
    """Unknown keys, a non-list, an empty list: ConfigError naming plugins.<key>."""
    base = {"name": "t", "seed": 0, "epochs": 1, "batch_size": 4}
    for table, message in [
        ({"module": ["x"]}, "plugins: unknown key 'module'"),
        ({"modules": "x"}, "plugins.modules: expected an array of non-empty strings"),
        ({"modules": []}, "plugins.modules: expected at least one module"),
        ({}, "plugins.modules: missing required key"),
        ("x", "plugins: expected a table"),
    ]:
        with pytest.raises(config.ConfigError, match=message):
            config.validate({**base, "plugins": table})


def test_an_unknown_op_and_an_op_with_params_as_activation_are_refused(tmp_path):
    """type = "op" takes registered user ops only; an op with parameters is not an activation."""
    _plugin(tmp_path, "plug_c")
    text = _config(tmp_path, "plug_c").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('op = "plug_c.scale"', 'op = "plug_c.nope"'))
    with pytest.raises(config.ConfigError, match=r"layers\[1\].op: unknown value 'plug_c.nope'"):
        config.load_config(bad)
    bad.write_text(text.replace('activation = "plug_c.softplus"', 'activation = "plug_c.scale"'))
    with pytest.raises(config.ConfigError, match=r"activation: unknown value 'plug_c.scale'"):
        config.load_config(bad)


# ------------------------------------------------------------------------------------------------
# A run that uses a plugin
# ------------------------------------------------------------------------------------------------


def test_a_plugin_run_records_its_modules_evaluates_elsewhere_and_refuses_a_changed_plugin(
    tmp_path, capsys, monkeypatch
):
    """train records plugins.json (module, file, sha256) and the summary names it; evaluate from
    another directory imports the plugin by the recorded path; a resume after the plugin's
    source changed is refused naming plugin_sha256.<module>, and --allow-changed records it."""
    plugin = _plugin(tmp_path / "src", "plug_d")
    cfg = _config(tmp_path / "src", "plug_d")
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--run-dir", str(run), "--stop-after", "2"]) == 0
    recs = json.loads((run / "plugins.json").read_text())
    assert recs == [
        {"module": "plug_d", "file": str(plugin.resolve()), "sha256": fileio.file_sha256(plugin)[0]}
    ]
    assert json.loads((run / "summary.json").read_text())["plugins"] == recs
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epoch"] == 2

    plugin.write_text(plugin.read_text() + "\n# edited\n")
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert "plugin_sha256.plug_d" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--resume", str(run), "--allow-changed"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_with_changes"] == ["plugin_sha256.plug_d"]
    assert summary["status"] == "completed"


@pytest.mark.subprocess
def test_a_fresh_process_resumes_a_plugin_run_from_another_directory(tmp_path):
    """A new interpreter (no plugin imported yet), started elsewhere, resumes the run: the
    resolved config's absolute path finds the module."""
    _plugin(tmp_path / "src", "plug_e")
    cfg = _config(tmp_path / "src", "plug_e")
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--run-dir", str(run), "--stop-after", "2"]) == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "jaxscratch.runs.cli", "train", "--resume", str(run)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


# ------------------------------------------------------------------------------------------------
# jaxscratch gradcheck --import, jaxscratch list
# ------------------------------------------------------------------------------------------------


def test_gradcheck_import_checks_what_the_module_registered(tmp_path, capsys, monkeypatch):
    """--import MODULE (found in the working directory) checks only the ops and losses the module
    registered, and passes for a correct plugin."""
    _plugin(tmp_path, "plug_f")
    monkeypatch.chdir(tmp_path)
    assert main(["gradcheck", "--import", "plug_f"]) == 0
    out = capsys.readouterr().out
    for name in ("plug_f.softplus", "plug_f.scale", "loss:plug_f.mae"):
        assert name in out
    assert "oracle: 3/3 ops and losses pass" in out


def test_gradcheck_import_fails_a_wrong_backward_and_can_name_one_op(tmp_path, capsys):
    """A plugin whose softplus backward is off by a factor fails (exit 1); naming one op checks
    that one only; a .py path works as well as a module name."""
    path = _plugin(tmp_path, "plug_g", bug=" * 2.0")
    assert main(["gradcheck", "--import", str(path), "plug_g.softplus"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "plug_g.scale" not in out


def test_gradcheck_import_errors_are_one_line(tmp_path, capsys, monkeypatch):
    """A module that is not there, or one that registers nothing: exit 2, one line."""
    monkeypatch.chdir(tmp_path)
    assert main(["gradcheck", "--import", "plug_nothere"]) == 2
    assert "No module named 'plug_nothere'" in capsys.readouterr().err
    (tmp_path / "plug_empty.py").write_text("X = 1\n")
    assert main(["gradcheck", "--import", "plug_empty"]) == 2
    err = capsys.readouterr().err
    assert "registered no op or loss" in err and len(err.strip().splitlines()) == 1


def test_list_names_everything_a_config_accepts(tmp_path, capsys, monkeypatch):
    """jaxscratch list: every layer type, optimizer, schedule, data set, activation and loss the
    config schema accepts, plugins included after --import; --json is machine-readable."""
    from jaxscratch.runs.datasets import DATA_SETS
    from jaxscratch.runs.layers import LAYERS
    from jaxscratch.runs.registry import OPTIMIZERS, SCHEDULES

    _plugin(tmp_path, "plug_h")
    monkeypatch.chdir(tmp_path)
    assert main(["list", "--import", "plug_h", "--json"]) == 0
    cat = json.loads(capsys.readouterr().out)
    assert set(cat["layers"]) == set(LAYERS)
    assert set(cat["optimizers"]) == set(OPTIMIZERS)
    assert set(cat["schedules"]) == set(SCHEDULES)
    assert set(cat["data"]) == set(DATA_SETS)
    assert "plug_h.softplus" in cat["activations"] and "plug_h.scale" not in cat["activations"]
    assert cat["ops"]["plug_h.scale"] == {"parameters": True, "stochastic": False}
    assert "plug_h.mae" in cat["losses"] and "softmax_cross_entropy" in cat["losses"]
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for name in ("dense", "conv2d", "recurrent", "adam", "exponential", "fashion-mnist", "relu"):
        assert name in text


# ------------------------------------------------------------------------------------------------
# A data error leaves nothing behind
# ------------------------------------------------------------------------------------------------


def test_a_data_error_creates_no_run_directory(tmp_path, capsys):
    """A missing CSV is exit 2 and one line, and the run directory is never created."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        textwrap.dedent(
            """\
            seed = 0
            epochs = 1
            batch_size = 4
            loss = "mean_squared_error"
            [data]
            name = "csv"
            path = "missing.csv"
            [[layers]]
            type = "dense"
            neurons = 1
            [optimizer]
            name = "sgd"
            lr = 0.1
            """
        )
    )
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "run")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_plugin_ops_parameters_train_and_are_saved(tmp_path):
    """The plugin's learnable scale is in the checkpoint, finite and moved from its init of 1."""
    from jaxscratch.runs.loader import load_run

    _plugin(tmp_path / "src", "plug_i")
    run = tmp_path / "run"
    assert main(["train", str(_config(tmp_path / "src", "plug_i")), "--run-dir", str(run)]) == 0
    scale = load_run(run).state.params[1]["W"]
    assert scale.shape == (5,) and bool(jnp.all(jnp.isfinite(scale)))
    assert not bool(jnp.all(scale == 1.0))


def test_the_example_plugin_passes_the_oracle_and_its_config_trains(tmp_path, capsys):
    """experiments/plugins/my_ops.py (the README's example) passes gradcheck --import, and
    experiments/configs/boston_plugin.toml trains with it (2 epochs here)."""
    root = Path(__file__).resolve().parents[1]
    assert main(["gradcheck", "--import", str(root / "experiments/plugins/my_ops.py")]) == 0
    assert "oracle: 3/3 ops and losses pass" in capsys.readouterr().out
    cfg = config.load_config(root / "experiments/configs/boston_plugin.toml")
    cfg = {**cfg, "epochs": 2, "eval_every": 2}
    from jaxscratch.runs.session import train

    summary = train(cfg, tmp_path / "run", out=open(os.devnull, "w"))
    assert summary["status"] == "completed"
    assert [r["module"] for r in summary["plugins"]] == ["my_ops"]


def test_gradcheck_json_is_one_object_a_ci_can_read(tmp_path, capsys, monkeypatch):
    """--json prints one JSON object: passed, the counts and a report per op, the diagnosis of a
    failing one included; the exit status still says pass/fail."""
    path = _plugin(tmp_path, "plug_j", bug=" * 2.0")
    assert main(["gradcheck", "--import", str(path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] is False and out["n"] == 3 and out["n_failed"] == 1
    bad = [r for r in out["reports"] if not r["passed"]]
    assert [r["name"] for r in bad] == ["plug_j.softplus"]
    assert bad[0]["diagnosis"] == "scale"
