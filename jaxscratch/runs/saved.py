"""Save a :class:`~jaxscratch.train.state.TrainState` to a directory and load it back, from Python.

``save(directory, state)`` writes one verified checkpoint (:mod:`jaxscratch.runs.checkpoint`: an
``.npz`` without pickles and a manifest of every leaf's shape, dtype and sha256, both written
atomically) named after ``state.epoch``; earlier checkpoints in the directory are kept.
``load(directory, like)`` reads the newest one back, checking every hash and every leaf against
``like`` (a freshly initialised TrainState or params of the same model), so a truncated file, a
bit flip or a different model is an error naming the file, never a silently different model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jaxscratch.runs import checkpoint
from jaxscratch.train.state import TrainState


def save(directory: str | Path, state: TrainState, meta: dict[str, Any] | None = None) -> Path:
    """Write ``state`` (params, optimizer state, epoch, key, best) into ``directory``, created if
    needed; returns the manifest's path. ``meta``: extra JSON kept in the manifest."""
    if not isinstance(state, TrainState):
        raise TypeError(f"save: expected a TrainState, got {type(state).__name__}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return checkpoint.save_state(directory, int(state.epoch), state, meta, keep=None)


def _manifest(path: Path) -> Path:
    if path.is_dir():
        newest = checkpoint.latest(path)
        if newest is None:
            raise checkpoint.CheckpointError(f"load: no checkpoint in {path}")
        return newest
    if not path.is_file():
        raise FileNotFoundError(f"load: {path} is neither a checkpoint directory nor a manifest")
    return path


def load(path: str | Path, like: TrainState | Any) -> TrainState:
    """The TrainState saved at ``path`` (a directory: its newest checkpoint; or a manifest).

    ``like``: a TrainState of the same model (its params and optimizer state are the templates),
    or a params pytree, which loads the params alone (the returned ``opt_state`` is ``None``:
    enough to predict, not to resume). Raises :class:`~jaxscratch.runs.checkpoint.CheckpointError`
    for a corrupt file and :class:`~jaxscratch.runs.checkpoint.CheckpointMismatch` for a checkpoint
    of another model (missing, unexpected or mis-shaped leaves, named).
    """
    if isinstance(like, TrainState):
        params, opt_state = like.params, like.opt_state
    else:
        params, opt_state = like, None
    state, _ = checkpoint.load_state(_manifest(Path(path)), params, opt_state)
    return state
