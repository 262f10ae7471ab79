"""``load_run`` -> (net, params, preprocessing) and ``jaxscratch predict`` (issue 12, item 5)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxscratch.data import MNIST, book_preprocess, book_split, boston_book_data, load_boston
from jaxscratch.runs import checkpoint, config, prediction
from jaxscratch.runs.cli import main
from jaxscratch.runs.datasets import Preprocessing
from jaxscratch.runs.loader import load_run
from jaxscratch.runs.prediction import predict_run
from jaxscratch.runs.rundir import RunError
from jaxscratch.train.programs import predict

NET = """\
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

[[layers]]
type = "dense"
neurons = 1

[optimizer]
name = "sgd_momentum"
lr = 0.01
momentum = 0.9
"""


def _train(directory: Path, text: str, name: str) -> Path:
    (directory / f"{name}.toml").write_text(text)
    run = directory / "run"
    assert main(["train", str(directory / f"{name}.toml"), "--run-dir", str(run)]) == 0
    return run


def _write_csv(path: Path, header: list[str] | None, rows: np.ndarray) -> Path:
    lines = [",".join(header)] if header else []
    lines += [",".join(repr(float(v)) for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    head, *rows = path.read_text().splitlines()
    return head.split(","), np.array([[float(c) for c in r.split(",")] for r in rows])


def _cli(*argv: str) -> int:
    return main(["predict", *argv])


@pytest.fixture(scope="module")
def patient_run(tmp_path_factory) -> Path:
    """Boston, restore-best early stopping with patience 2 (lr 0.2): the best epoch is older
    than the last two checkpoints."""
    d = tmp_path_factory.mktemp("patient")
    text = NET.replace("lr = 0.01", "lr = 0.2").replace("epochs = 4", "epochs = 12")
    return _train(
        d, text.replace("early_stopping = false", 'early_stopping = "best"\npatience = 2'), "p"
    )


# the CSV: features a, b, c around the target column y (as a user's export might be)
CSV_HEADER = ["a", "y", "b", "c"]


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory) -> tuple[Path, np.ndarray]:
    d = tmp_path_factory.mktemp("csvrun")
    rng = np.random.default_rng(3)
    X = rng.normal(5.0, 3.0, size=(60, 3)) * np.array([1.0, 10.0, 0.1])
    y = X @ np.array([0.5, -0.1, 20.0]) + rng.normal(0, 0.1, size=60)
    table = np.column_stack([X[:, 0], y, X[:, 1:]])
    _write_csv(d / "d.csv", CSV_HEADER, table)
    text = NET.replace('name = "boston"', 'name = "csv"\npath = "d.csv"\ntarget = "y"')
    return _train(d, text, "csv_run"), table


@pytest.fixture(scope="module")
def blobs_run(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A float32 softmax cross-entropy run on an .npz of three blobs."""
    d = tmp_path_factory.mktemp("blobs")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=200)
    X = (5.0 * rng.normal(size=(3, 5)))[labels] + rng.normal(size=(200, 5))
    np.savez(d / "blobs.npz", X=X, y=labels)
    text = NET.replace(
        'name = "boston"',
        'name = "npz"\npath = "blobs.npz"\ntask = "classification"\nstandardize = true',
    )
    text = text.replace(
        'loss = "mean_squared_error"', 'loss = "softmax_cross_entropy"\ndtype = "float32"'
    )
    text = text.replace("neurons = 1\n", "neurons = 3\n").replace("lr = 0.01", "lr = 0.3")
    return _train(d, text, "blobs"), X


def test_load_run_unpacks_as_net_params_preprocessing(patient_run):
    net, params, prep = load_run(patient_run)
    run = load_run(patient_run, "best", optimizer_state=False)
    assert run.net is net and run.preprocessing.input_shape == prep.input_shape == (13,)
    assert jax.tree_util.tree_all(
        jax.tree_util.tree_map(np.array_equal, run.params, params)
    )  # final = the restored best
    assert run.params is run.state.params and run.state.opt_state is None
    assert isinstance(prep, Preprocessing) and prep.dtype == "float64"


def test_apply_on_the_raw_training_rows_gives_the_training_arrays(patient_run, csv_run):
    _, _, prep = load_run(patient_run)
    b = load_boston()
    raw_train, raw_test, _, _ = book_split(b.X, b.y)
    X_train, X_test, _, _ = boston_book_data()
    assert np.array_equal(prep.apply(raw_train), X_train)
    assert np.array_equal(prep.apply(raw_test), X_test)
    run_dir, table = csv_run
    run = load_run(run_dir)
    ds = config.load_data(run.config)
    raw = np.delete(table, 1, axis=1)
    raw_train = book_split(raw, table[:, 1])[0]
    assert np.array_equal(run.preprocessing.apply(raw_train), ds.X_train)
    # ... and the comparison can fail: unstandardised rows are not the training arrays
    assert not np.allclose(raw_train, ds.X_train)
    with pytest.raises(ValueError, match=r"expected rows of shape \(3,\) \(3 features\).*\(5, 4\)"):
        run.preprocessing.apply(np.zeros((5, 4)))
    with pytest.raises(ValueError, match="row 1 holds NaN"):
        run.preprocessing.apply(np.array([[1.0, 2, 3], [np.nan, 0, 0]]))


def test_mnist_pixels_are_scaled_as_book_preprocess_does():
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    d = book_preprocess(MNIST(imgs, imgs[:, 0, 0] % 10, imgs[:4], imgs[:4, 0, 0] % 10))
    for shape in ((784,), (1, 28, 28)):
        prep = Preprocessing(
            shape, "float32", "classification", 10, pixel_mean=d.mean, pixel_std=d.std
        )
        for layout in (imgs, imgs.reshape(12, 784), imgs.reshape(12, 1, 28, 28)):
            got = prep.apply(layout)
            assert got.shape == (12, *shape) and got.dtype == np.float32
            assert np.array_equal(got.reshape(12, 784), d.X_train)
    with pytest.raises(ValueError, match=r"raw pixel values in 0\.\.255"):
        prep.apply(d.X_train)  # already scaled: refused, not scaled twice
    with pytest.raises(ValueError, match=r"\(784,\)"):
        Preprocessing((784,), "float32", "classification", 10, pixel_mean=1.0, pixel_std=2.0).apply(
            np.zeros((2, 27, 28))
        )


def test_predict_csv_with_or_without_targets_matches_predict(csv_run, tmp_path, capsys):
    run_dir, table = csv_run
    net, params, prep = load_run(run_dir)
    expected = np.asarray(predict(net, params, prep.apply(np.delete(table, 1, axis=1))))
    labelled = _write_csv(tmp_path / "with_y.csv", CSV_HEADER, table)
    bare = _write_csv(tmp_path / "bare.csv", ["a", "b", "c"], np.delete(table, 1, axis=1))
    for data, out in ((labelled, "p1.csv"), (bare, "p2.csv")):
        result = predict_run(run_dir, data, tmp_path / out)
        assert result["rows"] == 60 and result["columns"] == 1 and result["non_finite_rows"] == 0
        assert result["epoch"] == result["params_epoch"] == 4
        header, values = _read_csv(tmp_path / out)
        assert header == ["prediction"]
        np.testing.assert_array_equal(values, expected)  # repr round-trips float64 exactly
    assert _cli(str(run_dir), "--data", str(bare), "--out", str(tmp_path / "p.npy")) == 0
    assert "wrote 60 regression predictions" in capsys.readouterr().out
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), expected)


def test_predict_refuses_bad_inputs_with_one_line(csv_run, tmp_path, capsys):
    run_dir, table = csv_run
    swapped = _write_csv(tmp_path / "swap.csv", ["b", "a", "c"], np.delete(table, 1, axis=1))
    with pytest.raises(RunError, match=r"header \['b', 'a', 'c'\] differs .*\['a', 'b', 'c'\]"):
        predict_run(run_dir, swapped, tmp_path / "o.csv")
    two = _write_csv(tmp_path / "two.csv", ["a", "b"], table[:, :2])
    nan = tmp_path / "nan.csv"
    nan.write_text("a,b,c\n1,2,3\n4,nan,6\n")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    (tmp_path / "text.npy").write_text("1,2,3\n")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "cplx.npy", np.zeros((2, 3), complex))
    np.savez(tmp_path / "other.npz", A=np.zeros(3))
    cases = [
        (tmp_path / "junk.npz", r"junk.npz: not an .npz file \(not a zip archive\)"),
        (tmp_path / "text.npy", "not a .npy file"),
        (tmp_path / "obj.npy", "Object arrays cannot be loaded"),
        (tmp_path / "cplx.npy", "cplx.npy: X has dtype complex128; expected real numbers"),
        (tmp_path / "other.npz", r"expected an array X \(or X_test\); found \['A'\]"),
        (two, r"2 columns; expected 3 \(the features\) or 4"),
        (nan, "line 3, column 'b'"),
        (tmp_path / "missing.csv", "no such file"),
        (tmp_path / "rows.txt", "expected a .npy, .npz, .csv file"),
    ]
    for data, message in cases:
        capsys.readouterr()
        assert _cli(str(run_dir), "--data", str(data), "--out", str(tmp_path / "o.csv")) == 2
        err = capsys.readouterr().err
        assert err.startswith("jaxscratch predict: ") and err.count("\n") == 1, err
        assert re.search(message, err), (message, err)
    assert not (tmp_path / "o.csv").exists()


def test_predict_never_overwrites_without_force(csv_run, tmp_path, capsys):
    run_dir, table = csv_run
    np.save(tmp_path / "X.npy", np.delete(table, 1, axis=1)[:5])
    out = tmp_path / "mine.csv"
    out.write_text("the user's own file\n")
    assert _cli(str(run_dir), "--data", str(tmp_path / "X.npy"), "--out", str(out)) == 2
    assert "already exists (pass --force" in capsys.readouterr().err
    assert out.read_text() == "the user's own file\n"
    assert _cli(str(run_dir), "--data", str(tmp_path / "X.npy"), "--out", str(out), "--force") == 0
    assert _read_csv(out)[1].shape == (5, 1)
    for bad, message in (
        (tmp_path / "p.txt", "expected a .csv or .npy"),
        (tmp_path / "X.npy", "input data"),
    ):
        with pytest.raises(RunError, match=message):
            predict_run(run_dir, tmp_path / "X.npy", bad, force=True)
    np.save(tmp_path / "X3.npy", np.zeros((5, 4)))
    with pytest.raises(RunError, match=r"expected rows of shape \(3,\).*\(5, 4\)") as e:
        predict_run(run_dir, tmp_path / "X3.npy", tmp_path / "q.csv")
    assert e.value.exit_code == 2 and not (tmp_path / "q.csv").exists()


def test_classification_writes_classes_and_softmax_probabilities(blobs_run, tmp_path, capsys):
    run_dir, X = blobs_run
    np.savez(tmp_path / "new.npz", X_test=X[:40], y_test=np.zeros(40, dtype=int))
    result = predict_run(run_dir, tmp_path / "new.npz", tmp_path / "c.csv", checkpoint="latest")
    assert result["task"] == "classification" and result["labelled_rows"] == 40
    header, values = _read_csv(tmp_path / "c.csv")
    assert header == ["class", "p_0", "p_1", "p_2"] and values.shape == (40, 4)
    run = load_run(run_dir, "latest")
    with jax.enable_x64(False):
        logits = np.asarray(predict(run.net, run.params, run.preprocessing.apply(X[:40])))
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(values[:, 0], logits.argmax(axis=1))
    np.testing.assert_allclose(
        values[:, 1:], np.asarray(jax.nn.softmax(logits.astype(np.float64))), rtol=1e-12
    )
    np.testing.assert_allclose(values[:, 1:].sum(axis=1), 1.0, rtol=1e-12)
    big = prediction.softmax(np.array([[1000.0, 0.0, -1000.0]]))  # stable: no overflow
    assert np.isfinite(big).all() and big[0, 0] == 1.0


def test_non_finite_predictions_are_written_and_counted(blobs_run, tmp_path, monkeypatch, capsys):
    run_dir, X = blobs_run
    np.save(tmp_path / "X.npy", X[:6])
    real = prediction.predict

    def poisoned(*args, **kwargs):
        return real(*args, **kwargs).at[2].set(np.nan)

    monkeypatch.setattr(prediction, "predict", poisoned)
    assert (
        _cli(str(run_dir), "--data", str(tmp_path / "X.npy"), "--out", str(tmp_path / "c.csv")) == 0
    )
    assert "1 non-finite rows" in capsys.readouterr().out
    values = _read_csv(tmp_path / "c.csv")[1]
    assert (
        values[2, 0] == -1
        and np.isnan(values[2, 1:]).all()
        and np.isfinite(values[[0, 1, 3]]).all()
    )


def test_evaluate_best_when_the_best_epoch_is_older_than_the_last_two(
    patient_run, tmp_path, capsys
):
    summary = json.loads((patient_run / "summary.json").read_text())
    best, stop = summary["best_epoch"], summary["epochs_done"]
    kept = [checkpoint.manifest_epoch(p) for p in checkpoint.manifests(patient_run / "checkpoints")]
    assert best < stop - 1 and kept == [best, stop - 1, stop]
    assert main(["evaluate", str(patient_run), "--json", "--checkpoint", "best"]) == 0
    on_best = json.loads(capsys.readouterr().out)
    assert on_best["epoch"] == on_best["params_epoch"] == best
    assert on_best["eval_loss"] == pytest.approx(summary["best_eval_loss"], rel=1e-12)
    b = load_boston()
    np.save(tmp_path / "raw_test.npy", book_split(b.X, b.y)[1])
    result = predict_run(
        patient_run, tmp_path / "raw_test.npy", tmp_path / "p.npy", checkpoint="best"
    )
    assert result["epoch"] == best and result["rows"] == 152
    pred, y_test = np.load(tmp_path / "p.npy"), boston_book_data()[3]
    assert float(np.mean((pred - y_test) ** 2)) == pytest.approx(
        summary["best_eval_loss"], rel=1e-10
    )


def test_evaluate_on_a_raw_file_applies_the_runs_preprocessing(patient_run, tmp_path, capsys):
    """A Boston run evaluated on raw rows (unstandardised, as in the bundled CSV) scores as on
    its own test split: evaluate --data uses the same Preprocessing as predict."""
    b = load_boston()
    _, raw_test, _, y_test = book_split(b.X, b.y)
    header = [f"f{i}" for i in range(13)] + ["MEDV"]
    data = _write_csv(tmp_path / "raw.csv", header, np.column_stack([raw_test, y_test]))
    capsys.readouterr()
    assert main(["evaluate", str(patient_run), "--json", "--data", str(data)]) == 0
    on_file = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(patient_run), "--json"]) == 0
    on_split = json.loads(capsys.readouterr().out)
    assert on_file["rows"] == 152
    assert on_file["eval_loss"] == pytest.approx(on_split["eval_loss"], rel=1e-12)
