"""Training: one loop (:func:`fit`) over one compiled period kernel, its state and policies.

* :mod:`~jaxscratch.train.loop`: :func:`fit`; :mod:`~jaxscratch.train.many`: :func:`fit_many` (N runs in one program).
* :mod:`~jaxscratch.train.state`: :class:`TrainState`, :class:`Best`, :class:`History`,
  :class:`FitResult`, :func:`init_state`, :class:`TrainingDiverged`,
  :class:`EvaluationNotFinite`.
* :mod:`~jaxscratch.train.stopping`: :class:`EarlyStopping`, :func:`book_rule`.
* :mod:`~jaxscratch.train.programs`: :func:`make_step`, :func:`predict`, the period kernel.
* :mod:`~jaxscratch.train.step_mode`: :func:`auto_step_mode`.
* :mod:`~jaxscratch.train.progress`: :class:`ProgressLine`.
* :mod:`~jaxscratch.train.compile_cache`: :func:`enable_compilation_cache`.
* :mod:`~jaxscratch.train.parallel`: data parallelism; :mod:`~jaxscratch.train.metrics`.
"""

from jaxscratch.train.compile_cache import default_cache_dir, enable_compilation_cache
from jaxscratch.train.loop import fit
from jaxscratch.train.many import ManyHistory, ManyResult, ManyState, fit_many, init_many
from jaxscratch.train.programs import make_step, predict
from jaxscratch.train.progress import ProgressLine
from jaxscratch.train.state import (
    Best,
    EvaluationNotFinite,
    FitResult,
    History,
    TrainingDiverged,
    TrainState,
    init_state,
)
from jaxscratch.train.step_mode import STEP_MODES, auto_step_mode
from jaxscratch.train.stopping import BookRule, EarlyStopping, Stopping, Verdict, book_rule

__all__ = [
    "STEP_MODES",
    "Best",
    "BookRule",
    "EarlyStopping",
    "EvaluationNotFinite",
    "FitResult",
    "History",
    "ProgressLine",
    "Stopping",
    "TrainState",
    "TrainingDiverged",
    "Verdict",
    "auto_step_mode",
    "book_rule",
    "default_cache_dir",
    "enable_compilation_cache",
    "fit",
    "fit_many",
    "init_many",
    "ManyHistory",
    "ManyResult",
    "ManyState",
    "init_state",
    "make_step",
    "predict",
]
