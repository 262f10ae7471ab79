"""The run summary: what ``summary.json`` holds and the lines ``train`` prints at the end.

Every number in it is read from the checkpoint it names, never recomputed from the log: ``final``
is the evaluation of exactly the params saved in ``checkpoint`` (after an early stop with a
restore, the restored params, re-evaluated by ``fit`` when that epoch was never evaluated);
``best_*`` is the best evaluation, whose checkpoint ``best_checkpoint`` is always kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jaxscratch.runs.checkpoint import manifest_epoch
from jaxscratch.runs.progress import fmt


def summarize(
    cfg: dict[str, Any],
    run_dir: Path,
    status: str,
    manifest: Path | None,
    meta: dict[str, Any],
    wall_time: float,
) -> dict[str, Any]:
    """The summary dict of a run whose newest checkpoint is ``manifest`` (its ``meta``)."""
    epoch = manifest_epoch(manifest) if manifest is not None else 0
    best = meta.get("best")
    best_path = None
    if best is not None and manifest is not None:
        best_path = str(manifest.parent / f"epoch-{best['epoch']:06d}.json")
    return {
        "name": cfg["name"],
        "status": status,
        "epochs": cfg["epochs"],
        "epochs_done": epoch,
        "final": meta.get("evaluation") or None,
        "params_epoch": meta.get("state_epoch"),
        "best_eval_loss": best["eval_loss"] if best else None,
        "best_epoch": best["epoch"] if best else None,
        "best_checkpoint": best_path,
        "checkpoint": str(manifest) if manifest else None,
        "checkpoint_epoch": epoch,
        "stopped_early": bool(meta.get("stopped_early", False)),
        "restored_to_epoch": meta.get("restored_to_epoch"),
        "wall_time": round(wall_time, 3),
        "run_dir": str(run_dir),
    }


def _headline(s: dict[str, Any]) -> str:
    status, done, total, wall = s["status"], s["epochs_done"], s["epochs"], s["wall_time"]
    resume = f"; continue with: jaxscratch train --resume {s['run_dir']}"
    if status == "completed":
        return f"completed {done}/{total} epochs in {wall:.1f} s"
    if status == "stopped":
        return f"stopped after epoch {done}/{total} (--stop-after) in {wall:.1f} s{resume}"
    if status == "diverged":
        d = s.get("diverged", {})
        return (
            f"diverged at epoch {d.get('epoch')}/{total}, batch {d.get('batch')}: loss "
            f"{d.get('loss')} (after {wall:.1f} s); the last good checkpoint is epoch {done}"
        )
    if status in ("interrupted", "terminated"):
        how = "interrupted (SIGINT)" if status == "interrupted" else "terminated (SIGTERM)"
        return f"{how} after epoch {done}/{total} ({wall:.1f} s){resume}"
    return f"{status} after epoch {done}/{total} ({wall:.1f} s)"


def format_summary(summary: dict[str, Any]) -> str:
    """A few human-readable lines from a summary dict."""
    s = summary
    lines = [f"summary: {_headline(s)}"]
    if s.get("stopped_early"):
        restored = s.get("restored_to_epoch")
        what = (
            f"params restored to epoch {restored}" if restored is not None else "last params kept"
        )
        lines.append(
            f"  early stopping at epoch {s['epochs_done']}: eval loss did not improve; {what}"
        )
    final = s.get("final")
    if final:
        rest = "  ".join(f"{k} {fmt(v)}" for k, v in final.items() if k != "epoch")
        lines.append(f"  final (params of epoch {final['epoch']}): {rest}")
    if s.get("best_eval_loss") is not None:
        lines.append(
            f"  best eval_loss {fmt(s['best_eval_loss'])} at epoch {s['best_epoch']} "
            f"({s['best_checkpoint']})"
        )
    if s.get("checkpoint"):
        lines.append(f"  checkpoint: {s['checkpoint']} (epoch {s['checkpoint_epoch']})")
    if s.get("plot"):
        lines.append(f"  plot: {s['plot']}")
    if s.get("resumed_with_changes"):
        lines.append(f"  resumed with changes: {', '.join(s['resumed_with_changes'])}")
    lines.append(f"  run dir: {s['run_dir']}")
    return "\n".join(lines)
