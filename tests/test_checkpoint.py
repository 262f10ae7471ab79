"""Checkpoints: atomic writes, hash verification, structure checks against the model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch.core import init_params, serial
from jaxscratch.ops.dense import dense
from jaxscratch.optim.optimizers import adam, sgd_momentum
from jaxscratch.runs import checkpoint
from jaxscratch.runs.checkpoint import CheckpointError, CheckpointMismatch
from jaxscratch.train.state import Best, TrainState


def _model(hidden=5, n_in=4):
    net = serial(dense(hidden, "tanh"), dense(2))
    _, params = init_params(net, jax.random.key(0), (n_in,))
    return net, params


def _trees(hidden=5, opt=None):
    _, params = _model(hidden)
    opt = opt or sgd_momentum(0.9)
    state = opt.init(params)
    # make the state non-trivial so a wrong leaf order would show
    state = jax.tree.map(lambda a: a + 0.5, state)
    return {"params": params, "opt_state": state}


def _assert_trees_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_leaf_names_follow_the_tree_paths():
    trees = _trees()
    names = [n for n, _ in checkpoint.leaf_names("params", trees["params"])]
    assert names == ["params[0]['B']", "params[0]['W']", "params[1]['B']", "params[1]['W']"]
    names = [n for n, _ in checkpoint.leaf_names("opt_state", trees["opt_state"])]
    assert names[0] == "opt_state.velocity[0]['B']"  # NamedTuple field, then the params path


@pytest.mark.parametrize("opt", [sgd_momentum(0.9), adam()], ids=["momentum", "adam"])
def test_roundtrip_is_bitwise_and_rebuilds_namedtuple_states(tmp_path, opt):
    trees = _trees(opt=opt)
    m = checkpoint.save(tmp_path, 3, trees, {"best_eval_loss": 1.25})
    assert m.name == "epoch-000003.json" and checkpoint.latest(tmp_path) == m
    template = _trees(opt=opt)
    template = jax.tree.map(jnp.zeros_like, template)
    loaded = checkpoint.load(m, template)
    assert loaded.epoch == 3 and loaded.meta == {"best_eval_loss": 1.25}
    _assert_trees_equal(loaded.trees, trees)
    assert type(loaded.trees["opt_state"]) is type(trees["opt_state"])
    manifest = json.loads(m.read_text())
    assert manifest["format"] == checkpoint.FORMAT
    entry = {e["name"]: e for e in manifest["leaves"]}["params[0]['W']"]
    assert entry["shape"] == [4, 5] and entry["dtype"] == "<f8" and len(entry["sha256"]) == 64
    with np.load(m.with_suffix(".npz"), allow_pickle=False) as z:
        assert "params[0]['W']" in z.files


def test_keeps_the_newest_checkpoints_only(tmp_path):
    trees = _trees()
    for epoch in range(4):
        checkpoint.save(tmp_path, epoch, trees, keep=2)
    assert [p.name for p in checkpoint.manifests(tmp_path)] == [
        "epoch-000002.json",
        "epoch-000003.json",
    ]
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == [
        "epoch-000002.npz",
        "epoch-000003.npz",
    ]


def test_the_best_checkpoint_survives_pruning(tmp_path):
    trees = _trees()
    for epoch in range(5):
        checkpoint.save(tmp_path, epoch, trees, keep=2, protect=(1,))
    assert [checkpoint.manifest_epoch(p) for p in checkpoint.manifests(tmp_path)] == [1, 3, 4]


def _state(epoch=6, best_epoch=4, opt=None, key=True):
    trees = _trees(opt=opt)
    later = jax.tree.map(lambda a: a + 1.0, trees)
    best = Best(best_epoch, 0.25, {"mae": 0.5}, trees["params"], trees["opt_state"])
    k = jax.random.key(11) if key else None
    return TrainState(later["params"], later["opt_state"], epoch, k, best)


def test_train_state_roundtrip_is_bitwise(tmp_path):
    state = _state(opt=adam())
    m = checkpoint.save_state(tmp_path, 7, state, {"wall_time": 1.5})
    zeros = _trees(opt=adam())
    got, loaded = checkpoint.load_state(m, zeros["params"], zeros["opt_state"])
    assert loaded.epoch == 7 and got.epoch == 6 and loaded.meta["wall_time"] == 1.5
    _assert_trees_equal((got.params, got.opt_state), (state.params, state.opt_state))
    _assert_trees_equal(
        (got.best.params, got.best.opt_state), (state.best.params, state.best.opt_state)
    )
    assert (got.best.epoch, got.best.eval_loss, got.best.metrics) == (4, 0.25, {"mae": 0.5})
    assert type(got.opt_state) is type(state.opt_state)
    np.testing.assert_array_equal(jax.random.key_data(got.key), jax.random.key_data(state.key))
    assert jax.random.key_impl(got.key) == jax.random.key_impl(state.key)
    # the restored key draws what the original draws
    np.testing.assert_array_equal(
        jax.random.normal(got.key, (3,)), jax.random.normal(state.key, (3,))
    )


def test_params_load_without_an_optimizer_template(tmp_path):
    state = _state(key=False)._replace(best=None)
    m = checkpoint.save_state(tmp_path, 6, state)
    got, _ = checkpoint.load_state(m, _trees()["params"])
    assert got.opt_state is None and got.key is None and got.best is None
    _assert_trees_equal(got.params, state.params)
    loaded = checkpoint.load(m, {"params": _trees()["params"]})  # the plain loader too
    assert set(loaded.trees) == {"params"}
    # the params are still checked: a wrong model is a mismatch, optimizer leaves or not
    with pytest.raises(CheckpointMismatch, match="model expects float64 \\(4, 6\\)"):
        checkpoint.load_state(m, _trees(hidden=6)["params"])
    plain = checkpoint.save(tmp_path / "plain", 1, _trees())
    with pytest.raises(CheckpointError, match="holds no TrainState"):
        checkpoint.load_state(plain, _trees()["params"])


def test_truncated_checkpoint_is_rejected_with_path_and_hashes(tmp_path):
    m = checkpoint.save(tmp_path, 1, _trees())
    npz = m.with_suffix(".npz")
    data = npz.read_bytes()
    npz.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(m, _trees())
    msg = str(e.value)
    assert str(npz) in msg and json.loads(m.read_text())["sha256"] in msg and "corrupt" in msg


def test_bit_flip_is_rejected(tmp_path):
    m = checkpoint.save(tmp_path, 1, _trees())
    npz = m.with_suffix(".npz")
    data = bytearray(npz.read_bytes())
    data[len(data) // 3] ^= 0x01
    npz.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256 [0-9a-f]{64}.*does not match"):
        checkpoint.load(m, _trees())


def test_corrupt_manifest_is_named(tmp_path):
    m = checkpoint.save(tmp_path, 1, _trees())
    m.write_text(m.read_text()[:40])
    with pytest.raises(CheckpointError, match=f"manifest {m}.*not valid JSON"):
        checkpoint.load(m, _trees())


def test_missing_npz_is_named(tmp_path):
    m = checkpoint.save(tmp_path, 1, _trees())
    m.with_suffix(".npz").unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        checkpoint.load(m, _trees())


def test_structure_mismatch_names_leaves_and_shapes(tmp_path):
    m = checkpoint.save(tmp_path, 1, _trees(hidden=5))
    with pytest.raises(CheckpointMismatch) as e:
        checkpoint.load(m, _trees(hidden=6))
    msg = str(e.value)
    assert "leaf params[0]['W']: checkpoint has float64 (4, 5), model expects float64 (4, 6)" in msg
    assert "opt_state.velocity[1]['W']" in msg
    assert len(e.value.mismatched) == 6 and not e.value.missing and not e.value.unexpected


def test_missing_and_unexpected_leaves_are_listed(tmp_path):
    m = checkpoint.save(tmp_path, 1, _trees())
    bigger = _trees()
    extra = {"W": jnp.zeros((2, 3)), "B": jnp.zeros((1, 3))}
    bigger["params"] = (*bigger["params"], extra)
    with pytest.raises(CheckpointMismatch) as e:
        checkpoint.load(m, {"params": bigger["params"], "opt_state": bigger["opt_state"]})
    assert "missing leaf params[2]['W']: model expects float64 (2, 3)" in str(e.value)
    # the other way round: the checkpoint holds leaves the model lacks
    m2 = checkpoint.save(tmp_path / "b", 1, bigger)
    with pytest.raises(CheckpointMismatch) as e:
        checkpoint.load(m2, _trees())
    assert "unexpected leaf params[2]['B']" in str(e.value)


def test_dtype_mismatch_is_reported(tmp_path):
    trees = _trees()
    m = checkpoint.save(tmp_path, 1, trees)
    f32 = jax.tree.map(lambda a: np.asarray(a, np.float32), trees)
    with pytest.raises(CheckpointMismatch, match="checkpoint has float64 .* expects float32"):
        checkpoint.load(m, f32)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    trees = _trees()
    checkpoint.save(tmp_path, 1, trees)
    real_savez = np.savez

    def dying_savez(f, **arrays):
        real_savez(f, **arrays)
        f.truncate(100)  # half-written, then the process "dies"
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", dying_savez)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(tmp_path, 2, jax.tree.map(lambda a: a * 2, trees))
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] != [] and not list(tmp_path.glob(".*tmp"))
    m = checkpoint.latest(tmp_path)
    assert m.name == "epoch-000001.json"
    _assert_trees_equal(checkpoint.load(m, trees).trees, trees)
    # a failure between the .npz and the manifest leaves an orphan .npz: still epoch 1
    monkeypatch.setattr(checkpoint, "_file_sha256", lambda p: (_ for _ in ()).throw(OSError("x")))
    with pytest.raises(OSError):
        checkpoint.save(tmp_path, 2, trees)
    monkeypatch.undo()
    assert (tmp_path / "epoch-000002.npz").exists()
    assert checkpoint.latest(tmp_path).name == "epoch-000001.json"


@pytest.mark.subprocess
def test_sigkill_during_saves_leaves_a_valid_latest_checkpoint(tmp_path):
    """A real process killed at an arbitrary moment of a save loop: the newest manifest verifies."""
    script = textwrap.dedent(
        """
        import sys, numpy as np
        from jaxscratch.runs import checkpoint
        big = {"W": np.arange(400_000, dtype=np.float64)}
        for epoch in range(10_000):
            checkpoint.save(sys.argv[1], epoch, {"params": {"W": big["W"] + epoch}}, keep=3)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)])
    try:
        deadline = time.monotonic() + 60
        while len(checkpoint.manifests(tmp_path)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.137)  # somewhere inside a later save
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    m = checkpoint.latest(tmp_path)
    assert m is not None
    template = {"params": {"W": np.zeros(400_000)}}
    loaded = checkpoint.load(m, template)
    np.testing.assert_array_equal(
        np.asarray(loaded.trees["params"]["W"]), np.arange(400_000) + loaded.epoch
    )


# --- manifests confined to their directory; pruning that deletes only its own files -----------


def _rewrite(manifest, **fields):
    data = json.loads(manifest.read_text())
    data.update(fields)
    manifest.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "name", ["../../outside.npz", "/tmp/outside.npz", "sub/epoch-000001.npz", "..", ""]
)
def test_a_manifest_may_only_name_a_file_beside_it(tmp_path, name):
    d = tmp_path / "run" / "checkpoints"
    m = checkpoint.save(d, 1, _trees())
    outside = tmp_path / "outside.npz"
    outside.write_bytes(m.with_suffix(".npz").read_bytes())  # a valid file, in the wrong place
    _rewrite(m, file=name)
    with pytest.raises(CheckpointError, match="not a file name in its own directory"):
        checkpoint.load(m, _trees())


def test_a_symlinked_npz_pointing_outside_is_refused(tmp_path):
    d = tmp_path / "checkpoints"
    m = checkpoint.save(d, 1, _trees())
    npz = m.with_suffix(".npz")
    target = tmp_path / "elsewhere.npz"
    npz.rename(target)
    npz.symlink_to(target)
    with pytest.raises(CheckpointError, match="symlink .* outside"):
        checkpoint.load(m, _trees())


def test_a_manifest_whose_epoch_disagrees_with_its_name_is_refused(tmp_path):
    m = checkpoint.save(tmp_path, 20, _trees())
    _rewrite(m, epoch=45)
    with pytest.raises(CheckpointError, match="says epoch 45, but its name says epoch 20"):
        checkpoint.read_manifest(m)
    _rewrite(m, epoch="20")
    with pytest.raises(CheckpointError, match="not an integer"):
        checkpoint.read_manifest(m)


def test_a_state_epoch_past_the_checkpoint_epoch_is_refused(tmp_path):
    state = _state(epoch=6, best_epoch=4)
    m = checkpoint.save_state(tmp_path, 6, state)
    data = json.loads(m.read_text())
    data["meta"]["state_epoch"] = 31
    m.write_text(json.dumps(data))
    params = state.params
    with pytest.raises(CheckpointError, match="state_epoch 31"):
        checkpoint.load_state(m, params)


def test_keep_must_be_a_positive_integer(tmp_path):
    with pytest.raises(ValueError, match="checkpoint.save: keep must be an integer in"):
        checkpoint.save(tmp_path, 1, _trees(), keep=0)
    with pytest.raises(TypeError, match="keep must be an integer"):
        checkpoint.save(tmp_path, 1, _trees(), keep=True)
    assert checkpoint.manifests(tmp_path) == []


def test_pruning_never_deletes_through_a_symlinked_directory(tmp_path):
    theirs = tmp_path / "other_run"
    for epoch in range(3):
        checkpoint.save(theirs, epoch, _trees(), keep=None)
    before = sorted(p.name for p in theirs.iterdir())
    link = tmp_path / "checkpoints"
    link.symlink_to(theirs, target_is_directory=True)
    checkpoint.save(link, 3, _trees(), keep=1)
    assert sorted(p.name for p in theirs.iterdir()) == sorted(
        before + ["epoch-000003.json", "epoch-000003.npz"]
    )


def test_pruning_deletes_only_regular_files_a_manifest_of_the_directory_names(tmp_path):
    d = tmp_path / "checkpoints"
    m0 = checkpoint.save(d, 0, _trees(), keep=None)
    m1 = checkpoint.save(d, 1, _trees(), keep=None)
    # epoch 0's npz is a symlink to a file of the user's; epoch 1's manifest names another file
    precious = tmp_path / "precious.npz"
    m0.with_suffix(".npz").rename(precious)
    m0.with_suffix(".npz").symlink_to(precious)
    spare = d / "spare.npz"
    spare.write_bytes(b"not a checkpoint of this run")
    _rewrite(m1, file="../precious.npz")  # not confined: this manifest is left alone
    checkpoint.save(d, 2, _trees(), keep=1)
    assert precious.read_bytes()[:2] == b"PK" and spare.exists()
    assert not m0.exists() and m0.with_suffix(".npz").is_symlink()  # the link is not followed
    assert m1.exists() and m1.with_suffix(".npz").exists()
    assert checkpoint.latest(d).name == "epoch-000002.json"
