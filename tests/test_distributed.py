"""Training across processes: two real processes on localhost (jax.distributed, gloo CPU
collectives), each feeding its own rows of every batch, give fit's params to float64 rounding."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxscratch.core import init_params, serial
from jaxscratch.data import boston_book_data
from jaxscratch.ops.dense import dense
from jaxscratch.ops.dropout import dropout
from jaxscratch.ops.losses import mean_squared_error
from jaxscratch.optim.optimizers import sgd_momentum
from jaxscratch.train import distributed, fit

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.subprocess
def test_two_processes_train_like_one(tmp_path):
    """experiments/multiprocess.py --launch 2: both processes print the same per-epoch losses and
    process 0 finds params within 1e-10 of one-process fit (dropout and shuffling included)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "experiments/multiprocess.py"), "--launch", "2",
         "--epochs", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["processes"] == 2 and result["devices"] == 2
    assert result["max_abs_param_difference"] < 1e-10
    np.testing.assert_allclose(result["train_loss"], result["one_process_train_loss"], rtol=1e-12)
    # both processes share the pipe, so their lines may interleave: find them anywhere
    found = re.findall(
        r"process (\d) of 2: 2 devices in the mesh, train loss by epoch (\[[^]]*\])", proc.stdout
    )
    assert sorted(i for i, _ in found) == ["0", "1"] and found[0][1] == found[1][1]


def test_one_process_equals_fit():
    """In this (single) process the same loop equals fit to float64 rounding."""
    X, _, y, _ = boston_book_data()[:4]
    net = serial(dense(5, "tanh"), dropout(0.8, inverted=True), dense(1, "linear"))
    p0 = init_params(net, jax.random.key(3), (13,))[1]
    kw = {"epochs": 2, "batch_size": 50, "lr": 0.01}
    res = distributed.fit_processes(
        net, mean_squared_error, sgd_momentum(0.9), p0, X, y, key=jax.random.key(4), **kw
    )
    one = fit(net, mean_squared_error, sgd_momentum(0.9), p0, X, y, key=jax.random.key(4),
              stopping=None, **kw)  # fmt: skip
    for a, b in zip(jax.tree.leaves(res.params), jax.tree.leaves(one.state.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(res.train_loss, one.history.train_loss, rtol=1e-12)


def test_bad_arguments_are_named():
    """A process id outside the range, rows that do not match, a bad learning rate."""
    with pytest.raises(ValueError, match="process_id must be in 0..1"):
        distributed.initialize("127.0.0.1:1", 2, 2)
    net = dense(1, "linear")
    p0 = init_params(net, jax.random.key(0), (3,))[1]
    with pytest.raises(ValueError, match="X has 4 rows but y has 3"):
        distributed.fit_processes(net, mean_squared_error, sgd_momentum(0.9), p0, np.ones((4, 3)),
                                  np.ones((3, 1)), key=jax.random.key(0), epochs=1, batch_size=2)  # fmt: skip
    with pytest.raises(ValueError, match="learning rate"):
        distributed.fit_processes(net, mean_squared_error, sgd_momentum(0.9), p0, np.ones((4, 3)),
                                  np.ones((4, 1)), key=jax.random.key(0), epochs=1, batch_size=2,
                                  lr=-1.0)  # fmt: skip
