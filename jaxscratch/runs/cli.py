"""The ``jaxscratch`` command.

* ``jaxscratch --version``: the package version.
* ``jaxscratch gradcheck [OPS...] [--import MODULE]``: the gradient oracle over the op registry
  (and over the ops a plugin module registers), a row per op as it finishes.
* ``jaxscratch predict RUN_DIR --data FILE --out PREDS.csv [--seed-index I]``: a run's
  predictions on new rows (.npy, .npz or .csv, labelled or not), with the run's own
  preprocessing (``--seed-index``: which seed of a ``seeds = N`` run; required there).
* ``jaxscratch list [--import MODULE] [--json]``: every name a config may use.
* ``jaxscratch train CONFIG.toml [--run-dir DIR]``: a scripted training run (see
  :mod:`jaxscratch.runs.config` for the file, :mod:`jaxscratch.runs.rundir` for the run directory).
* ``jaxscratch train --resume RUN_DIR``: continue a run from its last checkpoint.
* ``jaxscratch evaluate RUN_DIR [--data NAME|FILE] [--split test|train] [--checkpoint final|best|
  latest|MANIFEST]``: metrics of a saved model.

Compiled programs are kept in the persistent compilation cache (``~/.cache/jaxscratch/xla``), so
a second run of a config skips compilation; ``JAXSCRATCH_COMPILE_CACHE=off`` turns that off, a
path moves it.

A user error (a bad argument, config, data file, run directory or checkpoint) is one line on
stderr, ``jaxscratch COMMAND: message``, and an exit status, never a traceback. Exit status: 0
success; 1 a failed run (diverged, corrupt or mismatched checkpoint, a failed gradient check); 2 a
usage, config or data error (a busy run directory, a resume of a changed config or data); a
``seeds = N`` run exits 1 only when every seed diverged; 130
interrupted by SIGINT (Ctrl-C), 143 by SIGTERM (the run stops at its next checkpoint, which is
kept, and can be resumed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _error(command: str, message: str) -> None:
    print(f"jaxscratch {command}: {message}", file=sys.stderr)


def _import_plugins(entries: list[str] | None) -> list[str]:
    """Import ``--import`` modules (names looked up in the working directory, then on
    ``sys.path``, or .py files); the names of the ops and losses they registered."""
    from pathlib import Path

    from jaxscratch.core import registered, registered_losses
    from jaxscratch.runs.plugins import import_module

    before = set(registered()) | set(registered_losses())
    for entry in entries or []:
        import_module(entry, [str(Path.cwd())])
    after = list(registered()) + list(registered_losses())
    return [k for k in after if k not in before]


def _gradcheck(args: argparse.Namespace) -> int:
    """The oracle table, a row printed as each op finishes (float64 inside the oracle)."""
    from jaxscratch.oracle.check import HEADER, Report, format_report, format_summary, iter_registry

    new = _import_plugins(args.imports)
    names = args.ops or (new if args.imports else None)
    if args.imports and not names:
        _error("gradcheck", f"--import {' '.join(args.imports)} registered no op or loss")
        return EXIT_USAGE
    if args.mutants:
        from jaxscratch.oracle.mutation import run_mutants_cli

        return run_mutants_cli(names, args.seed)
    reports: list[Report] = []
    for report in iter_registry(
        names, seed=args.seed, properties=args.properties, order=args.order
    ):
        if not reports and not args.json:
            print(HEADER, flush=True)
        reports.append(report)
        if not args.json:
            print(format_report(report), flush=True)
    if not reports:
        _error("gradcheck", f"no registered op or loss named {' '.join(args.ops)}")
        return EXIT_USAGE
    if args.json:
        from jaxscratch.oracle.custom import report_json

        print(json.dumps(report_json(reports), indent=1))
    else:
        print(format_summary(reports))
    return EXIT_OK if all(r.passed for r in reports) else EXIT_FAILED


def _list(args: argparse.Namespace) -> int:
    """Every name a config may use (after importing ``--import`` modules)."""
    from jaxscratch.runs.catalog import catalog, format_catalog

    _import_plugins(args.imports)
    cat = catalog()
    print(json.dumps(cat, indent=1) if args.json else format_catalog(cat))
    return EXIT_OK


def _train_usage(args: argparse.Namespace) -> str | None:
    """The usage error of a ``train`` command line, or None."""
    if args.resume is None and args.config is None:
        return "give a CONFIG.toml, or --resume RUN_DIR"
    if args.resume is not None and args.config is not None:
        return "give either a CONFIG.toml or --resume RUN_DIR, not both"
    if args.resume is not None and args.run_dir is not None:
        return "--run-dir is for new runs; --resume continues RUN_DIR in place"
    if args.allow_changed and args.resume is None:
        return "--allow-changed only applies to --resume RUN_DIR"
    if args.stop_after is not None and args.stop_after < 1:
        return f"--stop-after must be a positive epoch number, got {args.stop_after}"
    return None


def _train(args: argparse.Namespace) -> int:
    from jaxscratch.runs import config, session
    from jaxscratch.runs.rundir import EXIT_CODES, RunError

    usage = _train_usage(args)
    if usage is not None:
        _error("train", usage)
        return EXIT_USAGE
    try:
        if args.resume is not None:
            summary = session.train(
                run_dir=args.resume,
                resume=True,
                stop_after=args.stop_after,
                allow_changed=args.allow_changed,
            )
        else:
            cfg = config.load_config(args.config)
            summary = session.train(cfg, args.run_dir, stop_after=args.stop_after)
    except config.ConfigError as e:
        _error("train", f"config error: {e}")
        return EXIT_USAGE
    except RunError as e:
        _error("train", str(e))
        return e.exit_code
    if summary.get("error"):
        _error("train", summary["error"])
    return EXIT_CODES.get(summary["status"], EXIT_FAILED)


def _evaluate(args: argparse.Namespace) -> int:
    from jaxscratch.runs.evaluation import evaluate, format_evaluation
    from jaxscratch.runs.rundir import RunError

    try:
        result = evaluate(
            args.run_dir, data=args.data, split=args.split, checkpoint=args.checkpoint
        )
    except RunError as e:
        _error("evaluate", str(e))
        return e.exit_code
    print(json.dumps(result) if args.json else format_evaluation(result))
    return EXIT_OK


TRAIN_EPILOG = """\
The config is a TOML file: seed, epochs, batch_size, eval_every, early_stopping, loss, a [data]
table, one [[layers]] table per layer, an [optimizer] table and an optional [schedule] table (see
experiments/configs/ for examples, and the list of keys below). Unknown keys are errors.

early_stopping: "best" (default; true): stop after `patience` (default 1) evaluations in a row
whose eval loss is not lower than the best, and keep the best evaluated params; "book": the
book's rule, checked every
eval_every epochs, which keeps the params from the start of the worse epoch; "off" (false): train
all epochs.

The run directory receives the resolved config (config.toml), data.json, metrics.jsonl (one line
per evaluation), checkpoints/ (the whole training state after every evaluation, .npz + manifest
with sha256; the latest two and the best evaluated one are kept), loss_curves.png and
summary.json (whose "final" numbers are those of the final checkpoint's params).

seeds = N (default 1): N runs, run i with seed + i, trained at once into one run directory
(per-seed values and their mean and std in metrics.jsonl and summary.json; early_stopping "book"
or "off"). A seed that diverges is frozen, named and left out of the mean.

exit status: 0 done (or stopped by --stop-after), 1 diverged or failed (seeds = N: every seed
diverged), 2 usage/config/data error (also: the run directory is busy, or a resume whose config
or data changed), 130 interrupted (SIGINT), 143 terminated (SIGTERM); resume either with
--resume RUN_DIR."""

EVALUATE_EPILOG = """\
A run of seeds = N: every seed's numbers and their mean ± std over the seeds that did not
diverge (no "best" checkpoint: each seed's best epoch is in summary.json).

--data takes a data set name (boston, mnist, fashion-mnist: its --split) or a .csv/.npz file laid
out like the run's training data (all of its rows, preprocessed with the run's saved constants;
an .npz holds X and y, or X_test and y_test).

--checkpoint: final (default; the params the summary reports), best (the best evaluated epoch),
latest (the newest file), or a manifest path (.json).

exit status: 0 done, 1 corrupt or mismatched checkpoint, 2 usage or data error."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help may end with text computed only when help is shown."""

    extra_help: Callable[[], str] | None = None

    def format_help(self) -> str:
        """argparse's help, then the extra text."""
        text = super().format_help()
        return text + "\n" + self.extra_help() + "\n" if self.extra_help else text


def _config_keys() -> str:
    from jaxscratch.runs.config import reference

    return (
        "config keys (required keys bare, defaults after '=', optional keys in brackets):\n"
        + reference()
    )


_IMPORT_HELP = (
    "import this Python module first (a name, looked up in the working directory then on "
    "sys.path, or a .py file); repeatable"
)


def _add_gradcheck(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser(
        "gradcheck",
        help="check every registered op's hand-derived backward pass against jax.vjp and "
        "finite differences",
        description="Check every registered op's hand-derived backward pass against jax.vjp and "
        "central finite differences (float64). Exit status 1 if any op fails, 2 for a usage "
        "error (an unknown name, a module that cannot be imported).",
    )
    g.add_argument(
        "ops",
        nargs="*",
        help="only these registry names (default: all; with --import, those the modules register)",
    )
    g.add_argument("--seed", type=int, default=0, help="seed of the oracle examples")
    g.add_argument("--import", dest="imports", action="append", metavar="MODULE", help=_IMPORT_HELP)
    g.add_argument(
        "--json", action="store_true", help="print the reports as one JSON object (for CI)"
    )
    g.add_argument(
        "--mutants",
        action="store_true",
        help="mutation-test the oracle: generate wrong versions of each backward (scaled, "
        "sign-flipped, transposed, zeroed, reduced over another axis, cache swapped) and print "
        "how many it catches; exit 1 if any survives",
    )
    g.add_argument(
        "--order",
        type=int,
        choices=(1, 2),
        default=1,
        help="2: also differentiate each hand backward against jax.vjp of jax.vjp (slower)",
    )
    g.add_argument(
        "--properties",
        action="store_true",
        help="also check linearity in dy, per-sample independence, jit/vmap/scan agreement and "
        "the float32 error bound (about 2.5x slower)",
    )
    g.set_defaults(func=_gradcheck)


def _add_list(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser(
        "list",
        help="list every layer, op, activation, loss, optimizer, schedule and data set a config "
        "may name",
        description="List every layer type (with its keys), registered op, activation, loss, "
        "optimizer (with its keys), schedule and data set a config may name.",
    )
    g.add_argument("--import", dest="imports", action="append", metavar="MODULE", help=_IMPORT_HELP)
    g.add_argument("--json", action="store_true", help="print the lists as one JSON object")
    g.set_defaults(func=_list)


def _add_train(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser(
        "train",
        help="train a model described by a TOML config, or resume a run",
        description="Train the model of CONFIG.toml, writing metrics, checkpoints, plots and a "
        "summary into a run directory; or continue a run with --resume.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    t.add_argument("config", nargs="?", metavar="CONFIG.toml", help="the run's config file")
    t.add_argument(
        "--run-dir",
        metavar="DIR",
        help="where to write the run (default: runs/<config name>-<YYYYmmdd-HHMMSS>-<6 hex>); "
        "must not hold an earlier run",
    )
    t.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint; the metrics and parameters "
        "equal those of an uninterrupted run",
    )
    t.add_argument(
        "--allow-changed",
        action="store_true",
        help="with --resume: go on although the config or the training data changed since the "
        "checkpoint (the changes are recorded in the summary)",
    )
    t.add_argument(
        "--stop-after",
        type=int,
        metavar="EPOCH",
        help="stop after the first evaluation at or past EPOCH (checkpointed; resume later)",
    )
    t.extra_help = _config_keys
    t.set_defaults(func=_train)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "evaluate",
        help="report the loss and metrics of a run's saved model",
        description="Load a checkpoint of RUN_DIR (verified against its manifest; the final one "
        "by default) and report the loss and metrics (accuracy, or MAE and RMSE) on a data set.",
        epilog=EVALUATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by `train`")
    e.add_argument("--data", metavar="NAME|FILE", help="evaluate on this data (default: the run's)")
    e.add_argument(
        "--split",
        choices=("test", "train"),
        default="test",
        help="which split of a named data set (default: test)",
    )
    e.add_argument(
        "--checkpoint",
        metavar="final|best|latest|MANIFEST",
        default="final",
        help="which checkpoint (default: final)",
    )
    e.add_argument(
        "--best",
        dest="checkpoint",
        action="store_const",
        const="best",
        help="the best evaluated checkpoint (same as --checkpoint best)",
    )
    e.add_argument("--json", action="store_true", help="print the result as one JSON object")
    e.set_defaults(func=_evaluate)


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxscratch`` argument parser and its subcommands."""
    # the package is imported whenever this module is (read here: runs may not import upward)
    version = getattr(sys.modules.get("jaxscratch"), "__version__", "unknown")
    parser = argparse.ArgumentParser(
        prog="jaxscratch", description="Deep Learning from Scratch in JAX, gradients proven."
    )
    parser.add_argument("--version", action="version", version=f"jaxscratch {version}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    _add_gradcheck(sub)
    _add_train(sub)
    _add_evaluate(sub)
    from jaxscratch.runs.prediction import add_predict_parser

    add_predict_parser(sub)
    _add_list(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jaxscratch`` console script; returns the exit status.

    Usage errors return 2 (``--help`` returns 0) instead of raising ``SystemExit``, so tests can
    call ``main([...])`` in-process.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    from jaxscratch.train.compile_cache import cache_from_env

    cache_from_env()  # a second run loads its compiled programs (JAXSCRATCH_COMPILE_CACHE=off)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("jaxscratch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `jaxscratch gradcheck | head`: the reader left; not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (Python flushes stdout at exit)
        return EXIT_OK
    except Exception as e:
        code = _user_error_code(e)
        if code is None:
            raise  # a bug: the traceback is what a report needs
        _error(args.command, str(e))
        return code


def _user_error_code(e: Exception) -> int | None:
    """The exit status of an error the user can fix (bad files, a corrupt checkpoint, a full
    disk), or None for anything else."""
    from jaxscratch.runs.checkpoint import CheckpointError
    from jaxscratch.runs.rundir import RunError
    from jaxscratch.runs.schema import ConfigError

    if isinstance(e, RunError):
        return e.exit_code
    if isinstance(e, ConfigError):
        return EXIT_USAGE
    if isinstance(e, CheckpointError | OSError):
        return EXIT_FAILED
    return None


if __name__ == "__main__":
    sys.exit(main())
