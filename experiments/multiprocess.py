"""Data-parallel training across processes (jax.distributed), checked against one process.

Every process runs this script with its own --process-id; each feeds only its rows of every
global batch (:mod:`jaxscratch.train.distributed`). Process 0 then trains the same model with
one-process ``fit`` and prints the largest difference between the two sets of params.

Usage (two processes on this machine; on several hosts, the first host's address):
    python experiments/multiprocess.py --num-processes 2 --process-id 1 --coordinator 127.0.0.1:23456 &
    python experiments/multiprocess.py --num-processes 2 --process-id 0 --coordinator 127.0.0.1:23456
or let the script start the processes itself:
    python experiments/multiprocess.py --launch 2
Model: Boston 13-8(tanh)-inverted dropout 0.9-1, SGD momentum 0.9, lr 0.01, batch 32, float64,
--epochs (default 5). Process 0 writes --out/results.json (default results/multiprocess).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(n: int, argv: list[str]) -> int:
    """Start ``n`` processes of this script on localhost; process 0's exit status."""
    coordinator = f"127.0.0.1:{_free_port()}"
    base = [sys.executable, __file__, "--num-processes", str(n), "--coordinator", coordinator]
    procs = [subprocess.Popen(base + ["--process-id", str(i)] + argv) for i in range(n)]
    codes = [p.wait(timeout=600) for p in procs]
    return max(codes, key=abs)


def worker(args: argparse.Namespace) -> int:
    from jaxscratch.train import distributed

    distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    import jax
    import numpy as np

    jax.config.update("jax_enable_x64", True)
    from jaxscratch.core import init_params, serial
    from jaxscratch.data import boston_book_data
    from jaxscratch.fileio import write_json_atomic
    from jaxscratch.ops.dense import dense
    from jaxscratch.ops.dropout import dropout
    from jaxscratch.ops.losses import mean_squared_error
    from jaxscratch.optim.optimizers import sgd_momentum
    from jaxscratch.train import fit

    X, _, y, _ = boston_book_data()[:4]
    net = serial(dense(8, "tanh"), dropout(0.9, inverted=True), dense(1, "linear"))
    p0 = init_params(net, jax.random.key(1), (13,))[1]
    kw = {"epochs": args.epochs, "batch_size": 32, "lr": 0.01}
    key = jax.random.key(0)
    res = distributed.fit_processes(
        net, mean_squared_error, sgd_momentum(0.9), p0, X, y, key=key, **kw
    )
    me = jax.process_index()
    print(f"process {me} of {jax.process_count()}: {len(jax.devices())} devices in the mesh, "
          f"train loss by epoch {[round(v, 6) for v in res.train_loss]}", flush=True)  # fmt: skip
    if me != 0:
        return 0
    one = fit(net, mean_squared_error, sgd_momentum(0.9), p0, X, y, key=key, stopping=None, **kw)
    pairs = zip(jax.tree.leaves(res.params), jax.tree.leaves(one.state.params), strict=True)
    diff = max(float(np.max(np.abs(a - np.asarray(b)))) for a, b in pairs)
    print(f"one-process fit:  train loss by epoch {[round(v, 6) for v in one.history.train_loss]}")
    print(
        f"largest |params difference| between {jax.process_count()} processes and one: {diff:.3g}"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(
        out / "results.json",
        {
            "experiment": "multiprocess",
            "processes": jax.process_count(),
            "devices": len(jax.devices()),
            "epochs": args.epochs,
            "train_loss": res.train_loss,
            "one_process_train_loss": list(one.history.train_loss),
            "max_abs_param_difference": diff,
        },
    )
    print(f"wrote {out / 'results.json'}")
    print(
        f"largest |params difference| between {jax.process_count()} processes and one: {diff:.3g}"
    )
    return 0 if diff < 1e-10 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--launch", type=int, metavar="N", help="start N local processes")
    ap.add_argument("--num-processes", type=int, default=1)
    ap.add_argument("--process-id", type=int, default=0)
    ap.add_argument("--coordinator", default="127.0.0.1:23456")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--out", default="results/multiprocess")
    args = ap.parse_args(argv)
    if args.launch:
        return launch(args.launch, ["--epochs", str(args.epochs), "--out", args.out])
    return worker(args)


if __name__ == "__main__":
    sys.exit(main())
