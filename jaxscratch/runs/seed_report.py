"""What a ``seeds = N`` run reports: the mean ± std over its seeds, ``summary.json`` and the
printed summary and evaluation (the run itself, its checkpoints and its evaluation are in
:mod:`jaxscratch.runs.seeds`).

Policy for a diverged seed: fit_many freezes it (it keeps the params from the start of the period
in which it went non-finite) and the others train on. It is named in ``diverged_seeds`` and in
the printed summary, and the final mean ± std are over the seeds that did not diverge
(``final_runs`` of ``runs``; a diverged seed's frozen params would describe an unfinished run).
When every seed diverged the run's status is ``"diverged"`` (exit 1). A seed stopped by the
book's rule counts: its params are the ones the rule returns.

* :func:`mean_std`: the mean, sample std (ddof 1) and count of the finite values kept;
* :func:`params_epochs`: the epoch whose params each seed holds in a checkpoint;
* :func:`many_summary` / :func:`format_many_summary`: ``summary.json`` and its printed lines;
* :func:`format_seed_evaluation`: the printed lines of ``evaluate`` (every seed, mean ± std).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from jaxscratch.runs import checkpoint as ckpt
from jaxscratch.runs.progress import fmt


def seed_count(cfg: dict[str, Any]) -> int:
    """How many runs a resolved config trains (its ``seeds``; 1 when absent)."""
    return int(cfg.get("seeds", 1))


def mean_std(values: Any, include: Any = None) -> tuple[float | None, float | None, int]:
    """``(mean, sample std (ddof 1), count)`` of the finite ``values`` where ``include`` (N,)
    is True; None for a mean of nothing and a std of fewer than two values."""
    v = np.asarray(values, np.float64)
    keep = np.isfinite(v) & (True if include is None else np.asarray(include, bool))
    k = int(keep.sum())
    if k == 0:
        return None, None, 0
    with np.errstate(over="ignore"):  # a run near overflow: its std is inf, said as it is
        return float(v[keep].mean()), (float(v[keep].std(ddof=1)) if k > 1 else None), k


def floats(a: Any) -> list[float | None]:
    """Each value as a float, None where it is not finite (a JSON null)."""
    return [float(x) if math.isfinite(float(x)) else None for x in np.asarray(a, np.float64)]


def params_epochs(meta: dict[str, Any], cfg: dict[str, Any]) -> list[int]:
    """The epoch whose params each run holds in a checkpoint: a book-rule stop's restored epoch
    (the stop's epoch - 1), a diverged run's frozen epoch (the start of the period in which it
    diverged), else the epoch training reached."""
    many, every = meta["many"], cfg["eval_every"]
    out = []
    for stopped, diverged in zip(many["stopped_epoch"], many["diverged_epoch"], strict=True):
        if diverged:
            out.append(((diverged - 1) // every) * every)
        elif stopped:
            out.append(stopped - 1)
        else:
            out.append(int(many["epoch"]))
    return out


def many_summary(
    cfg: dict[str, Any],
    run_dir: Path,
    status: str,
    manifest: Path | None,
    meta: dict[str, Any],
    wall_time: float,
) -> dict[str, Any]:
    """The summary of a multi-seed run whose newest checkpoint is ``manifest`` (its ``meta``):
    every number read from that checkpoint (the module docstring for the policy)."""
    n = seed_count(cfg)
    seeds = [cfg["seed"] + i for i in range(n)]
    epoch = ckpt.manifest_epoch(manifest) if manifest is not None else 0
    many = meta.get("many") or {}
    evaluation = (meta.get("evaluation") or {}).get("per_seed") or {}
    finals = {k: np.array([np.nan if v is None else v for v in vals], np.float64)
              for k, vals in evaluation.items() if k != "train_loss"}  # fmt: skip
    diverged = np.array(many.get("diverged_epoch", [0] * n), np.int64)
    stopped = np.array(many.get("stopped_epoch", [0] * n), np.int64)
    kept = diverged == 0
    final: dict[str, float | None] = {}
    final_std: dict[str, float | None] = {}
    count = int(kept.sum())
    for k, v in finals.items():
        final[k], final_std[k], _ = mean_std(v, kept)
    epochs = params_epochs(meta, cfg) if many else [epoch] * n
    per_seed = []
    for i, seed in enumerate(seeds):
        best = many.get("best_eval_loss", [None] * n)[i]
        per_seed.append(
            {
                "seed": seed,
                "final": {
                    k: (None if not np.isfinite(v[i]) else float(v[i])) for k, v in finals.items()
                },  # fmt: skip
                "params_epoch": epochs[i],
                "best_epoch": (many.get("best_epoch", [0] * n)[i] or None),
                "best_eval_loss": best,
                "stopped_epoch": int(stopped[i]) or None,
                "diverged_epoch": int(diverged[i]) or None,
            }
        )
    return {
        "name": cfg["name"],
        "status": status,
        "epochs": cfg["epochs"],
        "epochs_done": epoch,
        "runs": n,
        "seeds": seeds,
        "final": final or None,
        "final_std": final_std or None,
        "final_runs": count,
        "final_policy": "mean and sample std (ddof 1) over the seeds that did not diverge",
        "per_seed": per_seed,
        "stopped_seeds": [s for s, e in zip(seeds, stopped, strict=True) if e],
        "diverged_seeds": [s for s, e in zip(seeds, diverged, strict=True) if e],
        "stopped_early": bool(stopped.any()),
        "checkpoint": str(manifest) if manifest else None,
        "checkpoint_epoch": epoch,
        "wall_time": round(wall_time, 3),
        "run_dir": str(run_dir),
    }


def mean_pm(mean: float | None, std: float | None) -> str:
    """``mean ± std`` as printed; ``n/a`` for no mean, the mean alone for no std."""
    if mean is None:
        return "n/a"
    return fmt(mean) + (f" ± {std:.3g}" if std is not None else "")


def format_many_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines from a :func:`many_summary` dict."""
    from jaxscratch.runs.summary import format_summary

    s = summary
    n, seeds = s["runs"], s["seeds"]
    head = format_summary(
        {k: v for k, v in s.items() if k not in ("final", "stopped_early", "checkpoint", "plot")}
    ).splitlines()
    if s["status"] == "diverged":
        head[0] = (
            f"summary: every one of the {n} seeds diverged (after {s['wall_time']:.1f} s); "
            f"each froze at its last finite period (per_seed in summary.json)"
        )
    lines = [head[0]]
    final, std = s.get("final") or {}, s.get("final_std") or {}
    if final:
        rest = "  ".join(f"{k} {mean_pm(final[k], std.get(k))}" for k in final)
        lines.append(
            f"  {n} seeds ({seeds[0]}..{seeds[-1]}), final params, mean ± std over "
            f"{s['final_runs']} of {n}: {rest}"
        )
    by_seed = {p["seed"]: p for p in s["per_seed"]}
    if s["stopped_seeds"]:
        where = ", ".join(f"{x} at epoch {by_seed[x]['stopped_epoch']}" for x in s["stopped_seeds"])
        lines.append(
            f"  the book's rule stopped {len(s['stopped_seeds'])} of {n} seeds "
            f"(each restored to the start of that epoch): {where}"
        )
    if s["diverged_seeds"]:
        where = ", ".join(
            f"{x} at epoch {by_seed[x]['diverged_epoch']}" for x in s["diverged_seeds"]
        )
        lines.append(f"  diverged (frozen; left out of the mean ± std): {where}")
    if s.get("checkpoint"):
        lines.append(f"  checkpoint: {s['checkpoint']} (epoch {s['checkpoint_epoch']})")
    if s.get("plot"):
        lines.append(f"  plot: {s['plot']}")
    lines += [line for line in head[1:] if not line.startswith("  early stopping")]
    return "\n".join(lines)


def format_seed_evaluation(result: dict[str, Any]) -> str:
    """The checkpoint and data, the mean ± std, then a line per seed."""
    keys = [k for k in ("eval_loss", "accuracy", "mae", "rmse") if k in result]
    n = result["seeds"]
    lines = [
        f"checkpoint {result['checkpoint']} (epoch {result['epoch']}, {n} seeds), "
        f"data: {result['data']}",
        f"mean ± std over {result['runs']} of {n} seeds: "
        + "  ".join(f"{k} {mean_pm(result[k], result['std'][k])}" for k in keys),
    ]
    for r in result["per_seed"]:
        note = f"  (diverged at epoch {r['diverged_epoch']})" if r["diverged_epoch"] else ""
        lines.append(
            f"  seed {r['seed']} (params of epoch {r['params_epoch']}): "
            + "  ".join(f"{k} {fmt(r[k])}" for k in keys)
            + note
        )
    return "\n".join(lines)
