"""Stopping policies: what :func:`~jaxscratch.train.fit` asks after each evaluation.

A policy looks at the new evaluation (a :class:`~jaxscratch.train.state.Best` candidate: epoch,
loss, metrics, params, optimizer state), the best so far and how many evaluations in a row did not
improve, and answers with a :class:`Verdict`: the new best, the new count, whether to stop and
which params to return. Two policies:

* :class:`EarlyStopping` ``(patience=1, min_delta=0.0, restore="best")``: stop after ``patience``
  evaluations in a row that do not lower the best eval loss by more than ``min_delta``;
  ``restore="best"`` returns the best evaluated params and optimizer state (the returned
  ``state.epoch`` is the best's epoch), ``"last"`` keeps the params training ended with.
* :func:`book_rule` ``(every=10)``: the book's rule (ch. 3, 4): only evaluations at epochs that
  are multiples of ``every`` count; the first that is not lower than the best so far restores the
  params and optimizer state held at the START of that epoch (never evaluated: the book's
  behaviour) and stops.

``stopping=None`` in ``fit``: never stop early.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

from jaxscratch.core import Params
from jaxscratch.train.state import Best
from jaxscratch.validate import check_choice, check_float, check_positive_int


class Verdict(NamedTuple):
    """A policy's answer. ``restore``: ``(params, opt_state, epoch)`` to return instead of the
    current ones, or None (keep the current ones)."""

    best: Best | None
    bad: int
    stop: bool
    restore: tuple[Params, Any, int] | None = None


class Stopping(Protocol):
    """``decide(best, bad, current, epoch_start) -> Verdict``; ``epoch_start``: the params and
    optimizer state at the start of the evaluated epoch. ``missed(best, epoch, eval_every)``: the
    count ``bad`` of a run resumed after ``epoch``."""

    def decide(
        self, best: Best | None, bad: int, current: Best, epoch_start: tuple[Params, Any]
    ) -> Verdict: ...

    def missed(self, best: Best | None, epoch: int, eval_every: int) -> int: ...


def _improves(current: Best, best: Best | None, min_delta: float) -> bool:
    return best is None or current.eval_loss < best.eval_loss - min_delta


class EarlyStopping:
    """Stop after ``patience`` evaluations in a row without an improvement of more than
    ``min_delta`` on the best eval loss. ``restore="best"``: return the best evaluation's params
    and optimizer state (``state.epoch == best.epoch``); ``"last"``: keep the last params. A run
    that reaches ``epochs`` without stopping keeps its last params either way."""

    def __init__(self, patience: int = 1, min_delta: float = 0.0, restore: str = "best"):
        self.patience = check_positive_int("EarlyStopping", "patience", patience)
        self.min_delta = check_float("EarlyStopping", "min_delta", min_delta, minimum=0.0)
        self.restore = check_choice("EarlyStopping", "restore", restore, ("best", "last"))

    def __repr__(self) -> str:
        return (
            f"EarlyStopping(patience={self.patience}, min_delta={self.min_delta}, "
            f"restore={self.restore!r})"
        )

    def decide(
        self, best: Best | None, bad: int, current: Best, epoch_start: tuple[Params, Any]
    ) -> Verdict:
        if best is None or _improves(current, best, self.min_delta):
            return Verdict(current, 0, False)
        bad += 1
        if bad < self.patience:
            return Verdict(best, bad, False)
        if self.restore == "best":
            return Verdict(best, bad, True, (best.params, best.opt_state, best.epoch))
        return Verdict(best, bad, True)

    def missed(self, best: Best | None, epoch: int, eval_every: int) -> int:
        """Evaluations after the best one, counted as ``fit`` makes them (every ``eval_every``
        epochs, and at the end of a shorter earlier run)."""
        if best is None or epoch <= best.epoch:
            return 0
        count = epoch // eval_every - best.epoch // eval_every
        return count + (1 if epoch % eval_every else 0)


class BookRule:
    """The book's rule; see :func:`book_rule`."""

    def __init__(self, every: int = 10):
        self.every = check_positive_int("book_rule", "every", every)

    def __repr__(self) -> str:
        return f"book_rule({self.every})"

    def decide(
        self, best: Best | None, bad: int, current: Best, epoch_start: tuple[Params, Any]
    ) -> Verdict:
        if current.epoch % self.every:
            return Verdict(best, bad, False)  # does not take part
        if _improves(current, best, 0.0):
            return Verdict(current, 0, False)
        params, opt_state = epoch_start
        return Verdict(best, bad + 1, True, (params, opt_state, current.epoch - 1))

    def missed(self, best: Best | None, epoch: int, eval_every: int) -> int:
        return 0


def book_rule(every: int = 10) -> BookRule:
    """The book's early stopping (ch. 3, 4): only evaluations at epochs that are multiples of
    ``every`` count; the first one whose eval loss is not lower than the best so far restores the
    params **and** optimizer state held at the start of that epoch and stops. The restored params
    were never evaluated (that is the book's behaviour; ``fit`` evaluates them once for
    ``History.final_*``)."""
    return BookRule(every)
