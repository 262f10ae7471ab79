"""One live progress line: ``epoch 30/50  train 0.1234  eval 0.2345  41.2 epochs/s  ETA 0:00:01``.

``ProgressLine(stream, epochs, start_epoch=0)``; ``.update(info)`` after each evaluation period
(``info``: ``fit``'s callback dict, ``epoch`` and ``train_loss``, ``eval_loss`` when evaluated);
``.close()`` ends the line. On a terminal the line is redrawn in place with ``\\r``; on anything
else (a file, a pipe, CI logs) it writes nothing at all.
"""

from __future__ import annotations

import time
from typing import Any, TextIO


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProgressLine:
    """A single redrawn line of training progress on ``stream`` (only if it is a terminal)."""

    def __init__(self, stream: TextIO, epochs: int, start_epoch: int = 0):
        isatty = getattr(stream, "isatty", None)
        self.stream, self.epochs, self.start_epoch = stream, int(epochs), int(start_epoch)
        self.tty = bool(isatty and isatty())
        self._t0 = time.perf_counter()
        self._shown = False

    def format(self, info: dict[str, Any], elapsed: float) -> str:
        """The text of the line for ``info`` after ``elapsed`` seconds of this session."""
        epoch = int(info["epoch"])
        parts = [f"epoch {epoch}/{self.epochs}"]
        if info.get("train_loss") is not None:
            parts.append(f"train {info['train_loss']:.4g}")
        if info.get("eval_loss") is not None:
            parts.append(f"eval {info['eval_loss']:.4g}")
        done = epoch - self.start_epoch
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            parts.append(f"{rate:.3g} epochs/s")
            parts.append(f"ETA {_clock(max(self.epochs - epoch, 0) / rate)}")
        return "  ".join(parts)

    def update(self, info: dict[str, Any]) -> None:
        """Redraw the line for the evaluation period that just ended."""
        if not self.tty:
            return
        line = self.format(info, time.perf_counter() - self._t0)
        self.stream.write("\r\x1b[2K" + line)
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        """End the line (a newline, if anything was drawn)."""
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False
