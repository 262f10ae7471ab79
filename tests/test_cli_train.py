"""``jaxscratch train`` / ``evaluate``: run directories, resume, determinism, divergence, exit codes."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxscratch.data import boston_book_data
from jaxscratch.runs import checkpoint, config
from jaxscratch.runs.cli import main
from jaxscratch.runs.loader import load_run
from jaxscratch.runs.progress import Progress
from jaxscratch.runs.rundir import RunError
from jaxscratch.train.loop import predict

# Boston, a small dropout net, momentum and a decaying lr: every piece of state a resume must restore
BASE = """\
seed = 7
epochs = 4
batch_size = 64
eval_every = 1
early_stopping = false
loss = "mean_squared_error"

[data]
name = "boston"

[[layers]]
type = "dense"
neurons = 6
activation = "tanh"
dropout = 0.9

[[layers]]
type = "dense"
neurons = 1

[optimizer]
name = "sgd_momentum"
lr = 0.01
momentum = 0.9

[schedule]
name = "linear"
final_lr = 0.002
"""


def _config(directory: Path, text: str = BASE, name: str = "small", **subs: str) -> Path:
    for old, new in subs.items():
        assert old in text
        text = text.replace(old, new)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without_wall(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in records]


def _final_leaves(run_dir: Path) -> dict[str, str]:
    """leaf name -> sha256 of the newest checkpoint (hashes of the exact array bytes)."""
    manifest = json.loads(checkpoint.latest(run_dir / "checkpoints").read_text())
    return {e["name"]: e["sha256"] for e in manifest["leaves"]}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    """The base config trained once, uninterrupted (shared by several tests)."""
    d = tmp_path_factory.mktemp("full")
    assert main(["train", str(_config(d)), "--run-dir", str(d / "run")]) == 0
    return d / "run"


def test_train_writes_the_run_directory(full_run, capsys):
    names = {p.name for p in full_run.iterdir()}
    assert {"config.toml", "data.json", "metrics.jsonl", "loss_curves.png", "summary.json"} <= names
    records = _metrics(full_run)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert set(records[0]) == {"epoch", "lr", "train_loss", "eval_loss", "mae", "rmse", "wall_time"}
    assert [r["lr"] for r in records] == pytest.approx(
        [0.01, 0.01 - 0.008 / 3, 0.01 - 0.016 / 3, 0.002]
    )
    assert records[-1]["eval_loss"] < records[0]["eval_loss"]
    assert all(math.isfinite(r["rmse"]) and r["rmse"] >= r["mae"] for r in records)
    summary = json.loads((full_run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_done"] == 4
    assert summary["final"] == {
        k: v for k, v in records[-1].items() if k not in ("lr", "train_loss", "wall_time")
    }
    ckpts = [p.name for p in checkpoint.manifests(full_run / "checkpoints")]
    assert ckpts == ["epoch-000003.json", "epoch-000004.json"]
    resolved = config.load_config(full_run / "config.toml")
    assert resolved["name"] == "small" and resolved["layers"][0]["dropout"] == 0.9
    assert (full_run / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_config_and_seed_are_bitwise_identical(full_run, tmp_path):
    cfg = _config(tmp_path)
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "again")]) == 0
    assert _without_wall(_metrics(tmp_path / "again")) == _without_wall(_metrics(full_run))
    assert _final_leaves(tmp_path / "again") == _final_leaves(full_run)
    # ... and the comparison can fail: another seed gives other numbers
    other = _config(tmp_path, name="other", **{"seed = 7": "seed = 8"})
    assert main(["train", str(other), "--run-dir", str(tmp_path / "other")]) == 0
    assert _metrics(tmp_path / "other")[-1]["eval_loss"] != _metrics(full_run)[-1]["eval_loss"]
    assert _final_leaves(tmp_path / "other") != _final_leaves(full_run)


def test_resume_after_interruption_equals_the_uninterrupted_run(full_run, tmp_path, capsys):
    cfg = _config(tmp_path)
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--run-dir", str(run), "--stop-after", "2"]) == 0
    assert "stopped after epoch 2/4" in capsys.readouterr().out
    assert [r["epoch"] for r in _metrics(run)] == [1, 2]
    assert json.loads((run / "summary.json").read_text())["status"] == "stopped"
    # a crash after a metrics line but before its checkpoint, and a torn last line
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "lr": 1.0, "train_loss": 1.0}\n{"epoch": 4, "lr"')
    assert main(["train", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "resuming small from epoch 2" in out and "completed 4/4 epochs" in out
    assert _without_wall(_metrics(run)) == _without_wall(_metrics(full_run))
    assert _final_leaves(run) == _final_leaves(full_run)
    # resuming a finished run does nothing
    assert main(["train", "--resume", str(run)]) == 0
    assert "already finished at epoch 4" in capsys.readouterr().out


def test_ctrl_c_keeps_the_last_checkpoint_and_the_run_resumes(full_run, tmp_path, monkeypatch):
    import jaxscratch.train.loop as trainer

    real_fit = trainer.fit

    def fit_interrupted_after_epoch_3(*args, callback, **kwargs):
        def cb(info):
            callback(info)
            if info["epoch"] == 3:
                raise KeyboardInterrupt

        return real_fit(*args, callback=cb, **kwargs)

    monkeypatch.setattr(trainer, "fit", fit_interrupted_after_epoch_3)
    run = tmp_path / "run"
    assert main(["train", str(_config(tmp_path)), "--run-dir", str(run)]) == 130
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    assert checkpoint.latest(run / "checkpoints").name == "epoch-000003.json"
    monkeypatch.undo()
    assert main(["train", "--resume", str(run)]) == 0
    assert _without_wall(_metrics(run)) == _without_wall(_metrics(full_run))
    assert _final_leaves(run) == _final_leaves(full_run)


def test_divergence_stops_with_epoch_batch_and_loss_and_keeps_the_last_good_checkpoint(
    tmp_path, capsys
):
    text = BASE.replace("lr = 0.01", "lr = 100000.0").replace("epochs = 4", "epochs = 8")
    text = text.replace('[schedule]\nname = "linear"\nfinal_lr = 0.002\n', "")
    run = tmp_path / "run"
    assert main(["train", str(_config(tmp_path, text, "huge_lr")), "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err
    m = re.search(r"diverged at epoch (\d+), batch (\d+): loss (inf|nan)", err)
    assert m, err
    epoch = int(m.group(1))
    assert 1 < epoch <= 8 and "kept the last good checkpoint" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["checkpoint_epoch"] == epoch - 1
    assert summary["diverged"]["epoch"] == epoch
    manifest = checkpoint.latest(run / "checkpoints")
    assert manifest.name == f"epoch-{epoch - 1:06d}.json"
    with np.load(manifest.with_suffix(".npz"), allow_pickle=False) as z:
        assert all(np.all(np.isfinite(z[k])) for k in z.files)
    assert main(["evaluate", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epoch"] == epoch - 1
    assert result["eval_loss"] == pytest.approx(_metrics(run)[-1]["eval_loss"], rel=1e-12)


def test_evaluate_reports_the_saved_model(full_run, capsys):
    assert main(["evaluate", str(full_run)]) == 0
    out = capsys.readouterr().out
    assert "epoch 4" in out and "boston test split (152 rows)" in out
    assert main(["evaluate", str(full_run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    last = _metrics(full_run)[-1]
    for k in ("eval_loss", "mae", "rmse"):
        assert result[k] == pytest.approx(last[k], rel=1e-12)
    assert main(["evaluate", str(full_run), "--json", "--split", "train"]) == 0
    train = json.loads(capsys.readouterr().out)
    assert train["rows"] == 354 and train["eval_loss"] != result["eval_loss"]


def test_evaluate_on_a_file_uses_the_training_preprocessing(tmp_path, capsys):
    rng = np.random.default_rng(3)
    X = rng.normal(5.0, 3.0, size=(60, 3))
    y = X @ np.array([0.5, -1.0, 2.0]) + rng.normal(0, 0.1, size=60)
    rows = "\n".join(",".join(repr(float(v)) for v in r) for r in np.column_stack([X, y]))
    (tmp_path / "d.csv").write_text("a,b,c,y\n" + rows + "\n")
    text = BASE.replace('name = "boston"', 'name = "csv"\npath = "d.csv"\ntarget = "y"')
    run = tmp_path / "run"
    assert main(["train", str(_config(tmp_path, text, "csv_run")), "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    on_split = json.loads(capsys.readouterr().out)
    test_rows = np.random.RandomState(80718).permutation(60)[:18]  # ceil(0.3 * 60)
    raw = "\n".join(",".join(repr(float(v)) for v in r) for r in np.column_stack([X, y])[test_rows])
    (tmp_path / "held_out.csv").write_text("a,b,c,y\n" + raw + "\n")
    assert main(["evaluate", str(run), "--json", "--data", str(tmp_path / "held_out.csv")]) == 0
    on_file = json.loads(capsys.readouterr().out)
    assert on_file["rows"] == on_split["rows"] == 18
    for k in ("eval_loss", "mae", "rmse"):
        assert on_file[k] == pytest.approx(on_split[k], rel=1e-12)
    assert main(["evaluate", str(run), "--data", str(tmp_path / "nope.csv")]) == 2


def test_classification_from_npz_in_float32(tmp_path, capsys):
    rng = np.random.default_rng(0)
    centres = 5.0 * rng.normal(size=(3, 5))
    labels = rng.integers(0, 3, size=300)
    X = centres[labels] + rng.normal(size=(300, 5))
    np.savez(tmp_path / "blobs.npz", X=X, y=labels)
    text = BASE.replace(
        'name = "boston"',
        'name = "npz"\npath = "blobs.npz"\ntask = "classification"\nstandardize = true',
    )
    text = text.replace(
        'loss = "mean_squared_error"', 'loss = "softmax_cross_entropy"\ndtype = "float32"'
    )
    text = text.replace("neurons = 1\n", 'neurons = 3\ninit = "glorot"\n').replace(
        "lr = 0.01", "lr = 0.3"
    )
    run = tmp_path / "run"
    assert main(["train", str(_config(tmp_path, text, "npz_blobs")), "--run-dir", str(run)]) == 0
    records = _metrics(run)
    assert set(records[0]) == {"epoch", "lr", "train_loss", "eval_loss", "accuracy", "wall_time"}
    assert records[-1]["accuracy"] > 0.9
    with np.load(checkpoint.latest(run / "checkpoints").with_suffix(".npz")) as z:
        assert z["params[1]['W']"].dtype == np.float32 and z["params[1]['W']"].shape == (6, 3)
    capsys.readouterr()
    np.savez(tmp_path / "more.npz", X=X[:50], y=labels[:50])
    assert main(["evaluate", str(run), "--json", "--data", str(tmp_path / "more.npz")]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 50


def test_early_stopping_is_recorded_and_a_stopped_run_is_finished(tmp_path, capsys):
    # a large constant lr: the eval loss rises after a few epochs and the run stops there (with
    # these draws every lr from 0.6 to 1.0 stops at epoch 2; 0.7 is inside that range)
    text = BASE.replace("early_stopping = false", "early_stopping = true").replace("0.01", "0.7")
    text = text.replace('[schedule]\nname = "linear"\nfinal_lr = 0.002\n', "")
    run = tmp_path / "run"
    assert main(["train", str(_config(tmp_path, text, "early")), "--run-dir", str(run)]) == 0
    records = _metrics(run)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_early"], records
    stop = records[-1]["epoch"]
    assert records[-1]["eval_loss"] >= records[-2]["eval_loss"]
    assert summary["restored_to_epoch"] == stop - 1 and stop < 4
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0  # the restored params: epoch stop - 1
    result = json.loads(capsys.readouterr().out)
    assert result["eval_loss"] == pytest.approx(records[-2]["eval_loss"], rel=1e-12)
    assert result["epoch"] == stop and result["params_epoch"] == stop - 1
    assert main(["evaluate", str(run)]) == 0
    assert f"params restored to epoch {stop - 1} by early stopping" in capsys.readouterr().out
    assert main(["train", "--resume", str(run)]) == 0
    assert "already finished" in capsys.readouterr().out


def _no_schedule(text: str) -> str:
    return text.replace('[schedule]\nname = "linear"\nfinal_lr = 0.002\n', "")


def _evaluated(run: Path, capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def _assert_same_numbers(result: dict, expected: dict) -> None:
    keys = set(expected) - {"epoch"}
    assert keys and keys <= set(result)
    for k in keys:
        assert result[k] == pytest.approx(expected[k], rel=1e-12), k


@pytest.fixture(scope="module")
def patient_run(tmp_path_factory) -> Path:
    """Restore-best early stopping with patience 2: the best epoch ends up older than the
    latest two checkpoints (lr 0.2: the eval loss rises at epochs 4 and 5 after its best at 3)."""
    d = tmp_path_factory.mktemp("patient")
    text = _no_schedule(BASE).replace("lr = 0.01", "lr = 0.2").replace("epochs = 4", "epochs = 12")
    text = text.replace("early_stopping = false", 'early_stopping = "best"\npatience = 2')
    assert main(["train", str(_config(d, text, "patient")), "--run-dir", str(d / "run")]) == 0
    return d / "run"


def test_the_summary_reports_the_final_checkpoint_and_the_best_one_is_kept(patient_run, capsys):
    summary = json.loads((patient_run / "summary.json").read_text())
    best, stop = summary["best_epoch"], summary["epochs_done"]
    assert summary["stopped_early"] and best == stop - 2 == summary["params_epoch"], summary
    kept = [p.name for p in checkpoint.manifests(patient_run / "checkpoints")]
    assert kept == [f"epoch-{e:06d}.json" for e in (best, stop - 1, stop)]
    final = _evaluated(patient_run, capsys)  # --checkpoint final is the default
    assert final["checkpoint"] == summary["checkpoint"] and final["params_epoch"] == best
    _assert_same_numbers(final, summary["final"])
    on_best = _evaluated(patient_run, capsys, "--checkpoint", "best")
    assert on_best["epoch"] == on_best["params_epoch"] == best
    assert on_best["eval_loss"] == pytest.approx(summary["best_eval_loss"], rel=1e-12)
    latest = _evaluated(patient_run, capsys, "--checkpoint", "latest")
    assert latest["epoch"] == stop
    # ... and the comparison can fail: the log's last line is not the final params
    assert _metrics(patient_run)[-1]["eval_loss"] != pytest.approx(final["eval_loss"], rel=1e-6)


def test_load_run_gives_the_state_to_predict_from(patient_run):
    run = load_run(patient_run)
    summary = run.summary
    assert run.state.epoch == run.state.best.epoch == summary["best_epoch"]
    assert run.state.opt_state is not None and run.state.key is not None
    _, X_test, _, y_test = boston_book_data()
    with jax.enable_x64(True):
        pred = predict(run.net, run.state.params, X_test)
        loss = float(run.loss.forward(pred, y_test)[0])
    assert loss == pytest.approx(summary["final"]["eval_loss"], rel=1e-12)
    bare = load_run(patient_run, "latest", optimizer_state=False)
    assert bare.state.opt_state is None and bare.state.best.opt_state is None
    assert bare.checkpoint.name == f"epoch-{summary['epochs_done']:06d}.json"
    with pytest.raises(RunError, match="no such file"):
        load_run(patient_run, "bestest")


def test_book_rule_final_numbers_are_those_of_the_restored_params(tmp_path, capsys):
    text = _no_schedule(BASE).replace("lr = 0.01", "lr = 0.2").replace("epochs = 4", "epochs = 8")
    text = text.replace("early_stopping = false", 'early_stopping = "book"')
    text = text.replace("eval_every = 1", "eval_every = 2")
    run = tmp_path / "run"
    assert main(["train", str(_config(tmp_path, text, "book")), "--run-dir", str(run)]) == 0
    summary = json.loads((run / "summary.json").read_text())
    stop = summary["epochs_done"]
    assert summary["stopped_early"] and summary["restored_to_epoch"] == stop - 1
    assert summary["final"]["epoch"] == stop - 1  # never evaluated during training: fit did it
    assert stop - 1 not in [r["epoch"] for r in _metrics(run)]
    _assert_same_numbers(_evaluated(run, capsys), summary["final"])


def test_corrupt_or_mismatched_checkpoints_fail_with_exit_1(full_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(full_run, run)
    npz = checkpoint.latest(run / "checkpoints").with_suffix(".npz")
    data = bytearray(npz.read_bytes())
    data[200] ^= 0x10
    npz.write_bytes(bytes(data))
    assert main(["evaluate", str(run)]) == 1
    err = capsys.readouterr().err
    assert str(npz) in err and "sha256" in err and "does not match" in err
    assert main(["train", "--resume", str(run)]) == 1
    assert "older checkpoints: epoch-000003.json" in capsys.readouterr().err
    run2 = tmp_path / "copy2"
    shutil.copytree(full_run, run2)
    cfg = (run2 / "config.toml").read_text().replace("neurons = 6", "neurons = 5")
    (run2 / "config.toml").write_text(cfg)
    assert main(["evaluate", str(run2)]) == 1
    err = capsys.readouterr().err
    assert (
        "leaf params[0][0]['W']: checkpoint has float64 (13, 6), model expects float64 (13, 5)"
        in err
    )


def test_usage_and_config_errors_exit_2(full_run, tmp_path, capsys):
    bad = _config(tmp_path, name="bad", **{"epochs = 4": "epochs = 4\nepoch = 3"})
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "epoch: unknown key; allowed keys: name, seed, epochs" in err
    bad = _config(tmp_path, name="bad2", **{'activation = "tanh"': 'activation = "tanhh"'})
    assert main(["train", str(bad)]) == 2
    assert (
        "layers[0].activation: unknown value 'tanhh'; allowed: 'linear'" in capsys.readouterr().err
    )
    assert main(["train", str(tmp_path / "missing.toml")]) == 2
    assert main(["train"]) == 2
    assert main(["train", str(bad), "--resume", str(full_run)]) == 2
    assert main(["train", str(_config(tmp_path)), "--run-dir", str(full_run)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert main([]) == 2
    assert main(["evaluate"]) == 2
    assert main(["evaluate", str(full_run), "--data", "iris"]) == 2


def test_user_errors_are_one_message_and_an_exit_status(full_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(full_run, run)
    assert main(["evaluate", str(run), "--checkpoint", str(tmp_path / "nope.json")]) == 2
    assert capsys.readouterr().err.startswith("jaxscratch evaluate: checkpoint ")
    (run / "summary.json").write_text("{not json")
    assert main(["evaluate", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "summary.json is corrupt" in err
    (run / "summary.json").unlink()  # an unfinished run: final is the latest checkpoint
    (run / "checkpoints" / "epoch-000004.json").write_text("{")
    assert main(["evaluate", str(run), "--checkpoint", "best"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "epoch-000004.json is corrupt or truncated" in err


def test_help_texts(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(c in out for c in ("gradcheck", "train", "evaluate"))
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--resume RUN_DIR" in out and "--run-dir DIR" in out and "exit status" in out
    assert '  dense: neurons, activation="linear", init="normal", dropout=1.0' in out
    assert "  sgd_momentum: lr, momentum=0.9" in out
    assert "early_stopping: 'best', 'book', 'off'" in out and "patience=1" in out
    assert main(["evaluate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--data NAME|FILE" in out and "--checkpoint final|best|latest|MANIFEST" in out


def test_gradcheck_subcommand_is_still_there(capsys):
    # (tests/test_gradcheck.py runs it; here only that the extended parser kept it)
    assert main(["gradcheck", "--help"]) == 0
    assert "finite differences" in capsys.readouterr().out


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_lines_otherwise():
    record = {"epoch": 2, "lr": 0.1, "train_loss": 1.5, "eval_loss": 2.0, "wall_time": 0.5}
    for stream in (_Tty(), io.StringIO()):
        p = Progress(stream, epochs=4, tick=None)
        p.start()
        p.update(record)
        p.close()
        text = stream.getvalue()
        assert "epoch 2/4  lr 0.1  train_loss 1.5  eval_loss 2" in text
        if isinstance(stream, _Tty):
            assert "\r" in text and "[" + "#" * 15 + "-" * 15 + "] 2/4 epochs" in text
        else:
            assert "\r" not in text and "#" not in text and text.count("\n") == 1


def test_progress_bar_ticks_and_estimates_within_the_evaluation_period():
    stream = _Tty()
    p = Progress(stream, epochs=20, eval_every=5, tick=0.01)
    p.start()
    for _ in range(1000):  # wait (at most 10 s) for the ticker's redraws; no timing asserted
        if stream.getvalue().count("\r\x1b[2K[") >= 3:
            break
        time.sleep(0.01)
    p.close()
    assert stream.getvalue().count("\r\x1b[2K[") >= 3 and p._thread is None
    p.epoch, p._t_last, p._sec_per_epoch = 5, 100.0, 2.0
    assert p._estimate(100.5) == (5, False)
    assert p._estimate(104.1) == (7, True)
    assert p._estimate(150.0) == (9, True)  # never past the next evaluation (epoch 10)


@pytest.mark.subprocess
def test_console_entry_point_and_determinism_across_processes(full_run, tmp_path):
    """``python -m jaxscratch`` in a fresh process (its own compilation) gives the same bits."""
    run = tmp_path / "run"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxscratch",
            "train",
            str(_config(tmp_path)),
            "--run-dir",
            str(run),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "epoch 4/4" in proc.stdout and "summary: completed 4/4 epochs" in proc.stdout
    assert _without_wall(_metrics(run)) == _without_wall(_metrics(full_run))
    assert _final_leaves(run) == _final_leaves(full_run)
