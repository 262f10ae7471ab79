"""Per-epoch learning-rate schedules: ``schedule(epoch_index) -> lr``.

A schedule is a callable on the 0-based epoch index, usable directly as ``fit(..., lr=schedule)``.
The trainer evaluates it on the host once per epoch and passes the value to the compiled step as a
traced argument, so a decaying learning rate never recompiles.

The book's decay (``Optimizer._setup_decay`` / ``_decay_lr``, chapter 4) runs epoch 0 at ``lr`` and
then decays once after every epoch, so the last of ``epochs`` epochs runs at ``final_lr``:

- linear: ``lr_e = lr - (lr - final_lr) * e / (epochs - 1)``
- exponential: ``lr_e = lr * d**e`` with ``d = (final_lr / lr) ** (1 / (epochs - 1))``

(The book subtracts or multiplies once per epoch; the closed forms above are the same numbers up to
rounding.) Both need ``epochs >= 2`` and ``0 < final_lr <= lr``; an epoch index outside
``0..epochs-1`` is a ``ValueError``, so a schedule built for fewer epochs than ``fit`` runs fails
loudly instead of extrapolating.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jaxscratch.validate import check_int, check_positive


def _epoch_index(fn: str, epoch: Any, epochs: int | None) -> int:
    e = check_int(fn, "the epoch index", epoch)
    if e < 0 or (epochs is not None and e >= epochs):
        span = f"0..{epochs - 1}" if epochs is not None else ">= 0"
        raise ValueError(f"{fn}: epoch index {e} is outside {span}")
    return e


@dataclass(frozen=True)
class Schedule:
    """A per-epoch learning rate. ``kind``: "constant", "linear" or "exponential".

    ``schedule(e) -> float`` for a 0-based epoch index ``e``; ``epochs`` is ``None`` for a constant.
    Frozen and hashable; ``describe()`` gives a short label for tables and JSON.
    """

    kind: str
    lr: float
    final_lr: float
    epochs: int | None

    def __call__(self, epoch: int) -> float:
        e = _epoch_index(f"{self.kind} schedule", epoch, self.epochs)
        if self.kind == "constant":
            return self.lr
        if self.epochs is None:  # the factories give every non-constant schedule an epoch count
            raise ValueError(f"{self.kind} schedule: needs an epoch count, got epochs=None")
        if self.kind == "linear":
            return self.lr - (self.lr - self.final_lr) * e / (self.epochs - 1)
        factor = (self.final_lr / self.lr) ** (1.0 / (self.epochs - 1))
        return self.lr * factor**e

    def values(self) -> list[float]:
        """The learning rate of every epoch (requires ``epochs``)."""
        if self.epochs is None:
            raise ValueError("Schedule.values: a constant schedule has no epoch count")
        return [self(e) for e in range(self.epochs)]

    def describe(self) -> str:
        if self.kind == "constant":
            return f"lr {self.lr:g}"
        return f"lr {self.lr:g} -> {self.final_lr:g} ({self.kind}, {self.epochs} epochs)"


def constant(lr: float) -> Schedule:
    """The same ``lr`` (> 0) every epoch."""
    v = check_positive("constant", "lr", lr)
    return Schedule("constant", v, v, None)


def _decay(kind: str, lr: float, final_lr: float, epochs: int) -> Schedule:
    fn = f"{kind}_decay"
    lr_v = check_positive(fn, "lr", lr)
    # positive: the trainer rejects a zero learning rate, and exponential decay cannot reach 0
    final = check_positive(fn, "final_lr", final_lr)
    if final > lr_v:
        raise ValueError(f"{fn}: final_lr {final_lr!r} exceeds lr {lr!r}; a decay must not grow")
    # at least 2: the decay divides by epochs - 1
    return Schedule(kind, lr_v, final, check_int(fn, "epochs", epochs, minimum=2))


def linear_decay(lr: float, final_lr: float, epochs: int) -> Schedule:
    """The book's linear decay: ``lr_e = lr - (lr - final_lr) * e / (epochs - 1)``, e = 0..epochs-1."""
    return _decay("linear", lr, final_lr, epochs)


def exponential_decay(lr: float, final_lr: float, epochs: int) -> Schedule:
    """The book's exponential decay: ``lr_e = lr * ((final_lr / lr) ** (1 / (epochs - 1))) ** e``."""
    return _decay("exponential", lr, final_lr, epochs)


# constant(lr); the decays take (lr, final_lr, epochs)
SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "linear": linear_decay,
    "exponential": exponential_decay,
}
