"""Data-parallel ``fit(mesh=...)``: same losses and params as one device, compiler-inserted all-reduce.

The multi-device checks run in a subprocess with ``--xla_force_host_platform_device_count=4`` (the
flag must be set before JAX initialises its CPU backend, which this test process already did).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscratch import core
from jaxscratch.ops import dense as layers
from jaxscratch.ops import losses
from jaxscratch.optim import optimizers
from jaxscratch.train import fit, parallel

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from jaxscratch import core
    from jaxscratch.ops import dense as layers
    from jaxscratch.ops import losses
    from jaxscratch.optim import optimizers
    from jaxscratch.train import parallel
    from jaxscratch.train import fit, programs
    assert len(jax.devices()) == 4, jax.devices()
    net = core.serial(layers.dense(7, "tanh"), layers.dense(3, "sigmoid"), layers.dense(2))
    _, params = core.init_params(net, jax.random.key(0), (5,))
    opt, loss = optimizers.sgd(), losses.mean_squared_error
    out = {"cases": []}

    def rel(a, b):
        a, b = np.asarray(a), np.asarray(b)
        return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))

    # 9 batches of 8, then a last batch of 4 (sharded) or 6 (replicated): 20 steps in 2 epochs;
    # the sharded tail scanned, the replicated one dispatched per step (both modes, both tails)
    for n, mode in ((76, "scan"), (78, "step")):
        X = np.asarray(jax.random.normal(jax.random.key(1), (n, 5)))
        y = np.asarray(jax.random.normal(jax.random.key(2), (n, 2)))
        kw = dict(epochs=2, batch_size=8, key=jax.random.key(3), lr=0.05, step_mode=mode,
                  eval_data=(X[:10], y[:10]), eval_every=1, stopping=None)
        one = fit(net, loss, opt, params, X, y, **kw)
        four = fit(net, loss, opt, params, X, y, mesh=4, **kw)
        leaves1 = jax.tree.leaves(one.params)
        leaves4 = jax.tree.leaves(four.params)
        out["cases"].append({
            "n": n, "mode": mode,
            "loss_rel": rel(four.history.train_loss, one.history.train_loss),
            "eval_rel": rel(four.history.eval_loss, one.history.eval_loss),
            "param_rel": max(rel(a, b) for a, b in zip(leaves4, leaves1)),
            "n_devices": min(len(a.sharding.device_set) for a in leaves4),
            "replicated": all(a.sharding.is_fully_replicated for a in leaves4),
            "changed": max(rel(a, b) for a, b in zip(leaves1, jax.tree.leaves(params))),
        })

    # the compiled chunk: batch gathered and split 4 ways, gradients all-reduced by XLA
    mesh = parallel.data_mesh(4)
    kernel = programs.period_kernel(net, loss, opt, programs.Batching(76, 8, 9, 4, "shuffle"), mesh)
    args = parallel.replicate(
        (params, (), jnp.zeros((76, 5)), jnp.zeros((76, 2)), jax.random.key(0)), mesh)
    p, s, Xd, yd, key = args
    hlo = kernel.scan.lower(
        p, s, Xd, yd, np.arange(1, dtype=np.int32), np.ones(1), np.zeros((1, 0), np.int32), key
    ).compile().as_text()
    out["all_reduce"] = "all-reduce" in hlo
    out["sharded_dot"] = "f64[2,5]" in hlo  # a (batch/4, features) slice of the batch of 8

    errors = {}
    try:
        fit(net, loss, opt, params, np.zeros((30, 5)), np.zeros((30, 2)),
                    epochs=1, batch_size=6, key=jax.random.key(0), mesh=4)
    except ValueError as e:
        errors["batch"] = str(e)
    try:  # a batch larger than the data set is the whole set: 30 rows on 4 devices
        fit(net, loss, opt, params, np.zeros((30, 5)), np.zeros((30, 2)),
                    epochs=1, batch_size=64, key=jax.random.key(0), mesh=4)
    except ValueError as e:
        errors["whole"] = str(e)
    try:
        parallel.data_mesh(5)
    except ValueError as e:
        errors["count"] = str(e)
    try:
        bad = jax.sharding.Mesh(np.array(jax.devices()), ("model",))
        fit(net, loss, opt, params, np.zeros((32, 5)), np.zeros((32, 2)),
                    epochs=1, batch_size=8, key=jax.random.key(0), mesh=bad)
    except ValueError as e:
        errors["axis"] = str(e)
    out["errors"] = errors
    json.dump(out, sys.stdout)
    """
)


@pytest.fixture(scope="module")
def four_devices() -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.subprocess
def test_mesh_matches_one_device(four_devices: dict) -> None:
    cases = four_devices["cases"]
    assert [(c["n"], c["mode"]) for c in cases] == [(76, "scan"), (78, "step")]
    for case in cases:
        assert case["changed"] > 1e-3, case  # training moved the params
        assert case["loss_rel"] <= 1e-10, case
        assert case["eval_rel"] <= 1e-10, case
        assert case["param_rel"] <= 1e-10, case
        assert case["n_devices"] == 4 and case["replicated"], case


@pytest.mark.subprocess
def test_compiler_reduces_gradients(four_devices: dict) -> None:
    assert four_devices["all_reduce"]
    assert four_devices["sharded_dot"]


@pytest.mark.subprocess
def test_mesh_errors_are_clear(four_devices: dict) -> None:
    errors = four_devices["errors"]
    assert "batch size 6" in errors["batch"] and "4 devices" in errors["batch"]
    assert "batch size 30" in errors["whole"] and "4 devices" in errors["whole"]
    assert "5 devices" in errors["count"] and "4 are available" in errors["count"]
    assert "'data'" in errors["axis"]


def test_single_device_mesh_is_plain_fit() -> None:
    """In this (one-device) process, mesh=1 runs and equals mesh=None exactly."""
    net = core.serial(layers.dense(4, "sigmoid"), layers.dense(1))
    _, params = core.init_params(net, jax.random.key(0), (3,))
    X = np.asarray(jax.random.normal(jax.random.key(1), (21, 3)))
    y = np.asarray(jax.random.normal(jax.random.key(2), (21, 1)))
    kw = dict(epochs=2, batch_size=5, key=jax.random.key(3), lr=0.1)
    a = fit(net, losses.mean_squared_error, optimizers.sgd(), params, X, y, **kw)
    b = fit(net, losses.mean_squared_error, optimizers.sgd(), params, X, y, mesh=1, **kw)
    assert a.history.train_loss == b.history.train_loss
    for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_mesh_argument_validation() -> None:
    with pytest.raises(TypeError, match="mesh must be"):
        parallel.resolve_mesh("data")
    with pytest.raises(ValueError, match="available"):
        parallel.data_mesh(len(jax.devices()) + 1)
    mesh = parallel.data_mesh(1)
    assert parallel.data_size(mesh) == 1
    # outside a mesh, shard_batch and the replicate helpers are the identity
    x = jnp.ones((3, 2))
    assert parallel.shard_batch(x, None) is x
    assert parallel.replicate(x, None) is x
