"""``seeds = N`` in a config: N runs in one run directory (fit_many), per-seed metrics and their
mean ± std, resume after --stop-after and SIGTERM, refused changes, evaluate / predict / load_run,
and seeds = 1 exactly as a config without the key."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tomllib
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from jaxscratch.runs import checkpoint, config, seed_report, seeds
from jaxscratch.runs.cli import main
from jaxscratch.runs.loader import load_run
from jaxscratch.runs.progress import format_record
from jaxscratch.runs.rundir import RunError, fingerprint

SMALL = """\
seed = 11
seeds = 3
epochs = 6
batch_size = 64
eval_every = 2
early_stopping = "book"
loss = "mean_squared_error"

[data]
name = "boston"

[[layers]]
type = "dense"
neurons = 6
activation = "tanh"

[[layers]]
type = "dense"
neurons = 1

[optimizer]
name = "sgd_momentum"
lr = 0.01
momentum = 0.9
"""


def _config(directory: Path, name: str = "small", **subs: str) -> Path:
    text = SMALL
    for old, new in subs.items():
        assert old in text
        text = text.replace(old, new)
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


def _metrics(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "wall_time"} for line in lines]


def _leaves(run_dir: Path) -> dict[str, str]:
    manifest = json.loads(checkpoint.latest(run_dir / "checkpoints").read_text())
    return {e["name"]: e["sha256"] for e in manifest["leaves"]}


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> Path:
    """SMALL (3 seeds) trained once, uninterrupted."""
    d = tmp_path_factory.mktemp("seeds")
    assert main(["train", str(_config(d)), "--run-dir", str(d / "run")]) == 0
    return d / "run"


def test_seeds_one_is_exactly_a_config_without_the_key(tmp_path, capsys):
    """seeds = 1 resolves to the config without the key, so an existing run's fingerprint (the
    hash below, of experiments/configs/boston_one_hidden.toml as resolved before seeds existed)
    is unchanged; bad values and settings fit_many cannot honour name their key."""
    path = Path(__file__).parents[1] / "experiments/configs/boston_one_hidden.toml"
    raw = tomllib.loads(path.read_text())
    plain = config.validate(raw, name="boston_one_hidden")
    assert config.validate({**raw, "seeds": 1}, name="boston_one_hidden") == plain
    assert "seeds" not in plain
    assert fingerprint(plain, {})["config_sha256"] == (
        "b1b4994175405f6f8ff3f14156fa83aad384b6c045b825688ab115f5975be8b1"
    )
    assert config.validate({**raw, "seeds": 16}, name="b")["seeds"] == 16
    assert "seeds" in config.reference()
    for value in (0, "3", True, 2.0, 10**6):
        with pytest.raises(config.ConfigError, match=r"^seeds: "):
            config.validate({**raw, "seeds": value}, name="b")
    best = {k: v for k, v in raw.items() if k != "early_stopping"}  # the default, "best"
    with pytest.raises(config.ConfigError, match=r"^early_stopping: 'best' .* seeds = 4"):
        config.validate({**best, "seeds": 4}, name="b")
    with pytest.raises(config.ConfigError, match=r"^step_mode: 'step' .* seeds = 2"):
        config.validate({**raw, "seeds": 2, "step_mode": "step"}, name="b")
    cfg = _config(tmp_path, **{'early_stopping = "book"\n': ""})
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config error" in err and "early_stopping" in err
    assert not (tmp_path / "r").exists()


def test_per_seed_metrics_their_mean_and_std_and_the_summary(multi, capsys):
    records = _metrics(multi)
    assert [r["epoch"] for r in records] == [2, 4, 6]
    for r in records:
        assert r["runs"] == 3
        for k in ("train_loss", "eval_loss", "mae", "rmse"):
            values = r["per_seed"][k]
            assert len(values) == 3 and len(set(values)) == 3  # three different runs
            assert r[k] == pytest.approx(np.mean(values), rel=1e-12)
            assert r["std"][k] == pytest.approx(np.std(values, ddof=1), rel=1e-12)
    s = json.loads((multi / "summary.json").read_text())
    assert s["status"] == "completed" and s["seeds"] == [11, 12, 13] and s["final_runs"] == 3
    assert s["diverged_seeds"] == [] and len(s["per_seed"]) == 3
    last = records[-1]["per_seed"]
    for i, p in enumerate(s["per_seed"]):  # nobody stopped: the final params are epoch 6's
        assert p["final"]["mae"] == pytest.approx(last["mae"][i], rel=1e-12)
        assert p["params_epoch"] == 6 and p["stopped_epoch"] is None
        best = int(np.argmin([r["per_seed"]["eval_loss"][i] for r in records]))
        assert p["best_epoch"] == records[best]["epoch"]
    assert s["final"]["mae"] == pytest.approx(np.mean(last["mae"]), rel=1e-12)
    assert s["final_std"]["mae"] == pytest.approx(np.std(last["mae"], ddof=1), rel=1e-12)
    assert (multi / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["train", "--resume", str(multi)]) == 0  # finished: nothing to do
    assert "already finished at epoch 6" in capsys.readouterr().out


def test_run_i_is_the_single_run_with_seed_plus_i(multi, tmp_path, capsys):
    """Seed index 1 of the 3-seed run equals the one-seed run with seed 12, to float rounding:
    every evaluation, the final params, and its predictions through --seed-index 1."""
    single = _config(tmp_path, "one", **{"seed = 11\nseeds = 3": "seed = 12"})
    assert main(["train", str(single), "--run-dir", str(tmp_path / "one")]) == 0
    one = _metrics(tmp_path / "one")
    for r, o in zip(_metrics(multi), one, strict=True):
        for k in ("train_loss", "eval_loss", "mae", "rmse"):
            assert r["per_seed"][k][1] == pytest.approx(o[k], rel=1e-10)
        assert r["per_seed"]["eval_loss"][0] != pytest.approx(o["eval_loss"], rel=1e-3)
    a, b = load_run(multi, run=1), load_run(tmp_path / "one")
    for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-10, atol=1e-13)
    assert a.state.epoch == b.state.epoch == 6
    rows = tmp_path / "rows.npy"
    np.save(rows, np.random.default_rng(0).normal(size=(4, 13)) * 5 + 10)
    assert main(["predict", str(multi), "--data", str(rows), "--out", str(tmp_path / "a.npy"),
                 "--seed-index", "1"]) == 0  # fmt: skip
    assert main(["predict", str(tmp_path / "one"), "--data", str(rows), "--out",
                 str(tmp_path / "b.npy")]) == 0  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"), 1e-10)
    capsys.readouterr()


def test_resume_after_stop_after_and_sigterm_equals_the_uninterrupted_run(
    multi, tmp_path, monkeypatch, capsys
):
    run = tmp_path / "stopped"
    assert main(["train", str(_config(tmp_path)), "--run-dir", str(run), "--stop-after", "2"]) == 0
    assert "stopped after epoch 2/6" in capsys.readouterr().out
    assert [r["epoch"] for r in _metrics(run)] == [2]
    assert main(["train", "--resume", str(run)]) == 0
    assert "resuming small from epoch 2" in capsys.readouterr().out
    assert _metrics(run) == _metrics(multi) and _leaves(run) == _leaves(multi)

    real = seeds.fit_many

    def sigterm_at_epoch_4(*args, callback, **kwargs):
        def cb(info):
            if info["epoch"] == 4:
                os.kill(os.getpid(), signal.SIGTERM)  # the run's handler only records it
            callback(info)

        return real(*args, callback=cb, **kwargs)

    monkeypatch.setattr(seeds, "fit_many", sigterm_at_epoch_4)
    term = tmp_path / "term"
    assert main(["train", str(_config(tmp_path)), "--run-dir", str(term)]) == 143
    assert json.loads((term / "summary.json").read_text())["status"] == "terminated"
    assert checkpoint.latest(term / "checkpoints").name == "epoch-000004.json"
    monkeypatch.undo()
    assert main(["train", "--resume", str(term)]) == 0
    assert _metrics(term) == _metrics(multi) and _leaves(term) == _leaves(multi)
    # ... and the comparison can fail: another seed
    other = tmp_path / "other"
    cfg = _config(tmp_path, "other", **{"seed = 11": "seed = 14"})
    assert main(["train", str(cfg), "--run-dir", str(other), "--stop-after", "2"]) == 0
    assert _metrics(other) != _metrics(multi)[:1]

    # a resume with another number of seeds is refused, naming the key
    capsys.readouterr()
    text = (other / "config.toml").read_text()
    (other / "config.toml").write_text(text.replace("seeds = 3", "seeds = 2"))
    assert main(["train", "--resume", str(other)]) == 2
    assert "seeds: 3 -> 2" in capsys.readouterr().err
    (other / "config.toml").write_text(text.replace("seeds = 3\n", ""))
    assert main(["train", "--resume", str(other)]) == 2
    assert "seeds: 3 -> '(absent)'" in capsys.readouterr().err
    assert main(["train", "--resume", str(other), "--allow-changed"]) == 1
    assert "holds 3 seeds" in capsys.readouterr().err


def test_evaluate_predict_and_load_run_of_a_multi_seed_run(multi, tmp_path, capsys):
    """evaluate: every seed and the mean ± std; predict / load_run without a seed index, or
    with "best", are one-line errors; load_run(run=I) is seed I's params."""
    assert main(["evaluate", str(multi), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    summary = json.loads((multi / "summary.json").read_text())
    assert [p["seed"] for p in result["per_seed"]] == [11, 12, 13] and result["runs"] == 3
    for p, s in zip(result["per_seed"], summary["per_seed"], strict=True):
        assert p["mae"] == pytest.approx(s["final"]["mae"], rel=1e-12)
    assert result["mae"] == pytest.approx(summary["final"]["mae"], rel=1e-12)
    assert main(["evaluate", str(multi)]) == 0
    assert "mean ± std over 3 of 3 seeds" in capsys.readouterr().out
    rows = tmp_path / "rows.npy"
    np.save(rows, np.zeros((2, 13)))
    assert main(["predict", str(multi), "--data", str(rows), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass --seed-index I (0..2" in err
    out = str(tmp_path / "p.csv")
    assert (
        main(["predict", str(multi), "--data", str(rows), "--out", out, "--seed-index", "3"]) == 2
    )
    assert "--seed-index must be a seed index in 0..2, got 3" in capsys.readouterr().err
    assert main(["evaluate", str(multi), "--best"]) == 2
    assert "keeps no best checkpoint" in capsys.readouterr().err
    with pytest.raises(RunError, match="pass run=I"):
        load_run(multi)
    stacked = np.load(checkpoint.latest(multi / "checkpoints").with_suffix(".npz"))
    run = load_run(multi, run=2, optimizer_state=False)
    np.testing.assert_array_equal(run.params[0]["W"], stacked["params[0]['W']"][2])
    assert run.state.opt_state is None


def test_a_diverged_seed_is_named_and_left_out_of_the_mean(tmp_path, capsys):
    """Every seed diverging (lr 1e200) is status "diverged", exit 1, each seed named with its
    epoch and frozen finite; a summary with one diverged seed of three averages the other two."""
    cfg = _config(tmp_path, "huge", **{"lr = 0.01": "lr = 1e200"})
    run = tmp_path / "huge"
    assert main(["train", str(cfg), "--run-dir", str(run)]) == 1
    captured = capsys.readouterr()
    assert "every one of the 3 seeds diverged" in captured.err + captured.out
    s = json.loads((run / "summary.json").read_text())
    assert s["status"] == "diverged" and s["diverged_seeds"] == [11, 12, 13]
    assert s["final"] == {"eval_loss": None, "mae": None, "rmse": None} and s["final_runs"] == 0
    with np.load(checkpoint.latest(run / "checkpoints").with_suffix(".npz")) as z:
        assert all(np.isfinite(z[k]).all() for k in z.files)
    meta = json.loads(checkpoint.latest(run / "checkpoints").read_text())["meta"]
    meta["many"]["diverged_epoch"] = [0, 3, 0]  # as if only seed 12 had diverged
    meta["evaluation"]["per_seed"]["mae"] = [2.0, 9.0, 4.0]
    cfg_dict = config.load_config(run / "config.toml")
    one = seed_report.many_summary(cfg_dict, run, "completed", None, meta, 1.0)
    assert one["final"]["mae"] == 3.0 and one["final_std"]["mae"] == pytest.approx(2**0.5)
    assert one["final_runs"] == 2 and one["diverged_seeds"] == [12]
    assert one["per_seed"][1]["params_epoch"] == 2  # frozen at the start of epochs 3..4
    text = seed_report.format_many_summary(one)
    assert "mean ± std over 2 of 3" in text and "12 at epoch 3" in text


def test_the_progress_line_of_a_period_with_no_run_evaluated_says_n_a():
    """A period in which no run was evaluated (each mean None): the progress line says n/a and
    how many runs it covers (0/3), never None; a period with one run has its mean alone."""
    keys = ("train_loss", "eval_loss", "mae")
    record = {"epoch": 4, "lr": 0.01, **dict.fromkeys(keys), "std": dict.fromkeys(keys),
              "runs": 0, "wall_time": 1.5}  # fmt: skip
    line = format_record(seeds.ManySession.display(SimpleNamespace(n=3), record), 6)
    assert "None" not in line and "eval_loss n/a" in line and "runs 0/3" in line, line
    record.update(eval_loss=2.5, runs=1)
    line = format_record(seeds.ManySession.display(SimpleNamespace(n=3), record), 6)
    assert "eval_loss 2.5  " in line and "runs 1/3" in line, line


def test_resume_from_a_corrupt_newest_checkpoint_names_the_older_one(multi, tmp_path, capsys):
    """--resume of a multi-seed run whose newest .npz is corrupt: exit 1 naming the file and,
    as a single run does, the older checkpoint to fall back on."""
    run = tmp_path / "copy"
    shutil.copytree(multi, run)
    newest = checkpoint.latest(run / "checkpoints")
    older = [m.name for m in checkpoint.manifests(run / "checkpoints") if m != newest]
    assert older
    npz = newest.with_suffix(".npz")
    data = bytearray(npz.read_bytes())
    data[200] ^= 0x10
    npz.write_bytes(bytes(data))
    assert main(["train", "--resume", str(run)]) == 1
    err = capsys.readouterr().err
    assert str(npz) in err and f"older checkpoints: {', '.join(older)}" in err, err
    assert f"delete {newest.name} to resume from the one before it" in err
