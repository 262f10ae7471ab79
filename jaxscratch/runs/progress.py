"""The progress of a run on its output stream: a line per evaluation, and on a terminal a bar.

:func:`format_record` writes one metrics record as a line; :class:`Progress` prints them and, on
a terminal, redraws a bar of epochs below them while the compiled epochs run.
"""

from __future__ import annotations

import threading
import time
from typing import Any, TextIO


def fmt(v: Any) -> str:
    """A float to 6 significant digits, anything else as str."""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def format_record(record: dict[str, Any], epochs: int) -> str:
    """``epoch  10/50  lr 0.01  train_loss 12.3  eval_loss 20.1  mae 3.1  rmse 4.4  1.2s``."""
    width = len(str(epochs))
    parts = [f"epoch {record['epoch']:>{width}}/{epochs}"]
    for k, v in record.items():
        if k in ("epoch", "wall_time"):
            continue
        parts.append(f"{k} {fmt(v)}")
    parts.append(f"{record['wall_time']:.1f}s")
    return "  ".join(parts)


class Progress:
    """Progress of a run: a line per metrics record; on a terminal also a bar of epochs below them.

    Not a terminal (a file, a pipe, CI): the plain lines only. On a terminal the bar is redrawn in
    place every ``tick`` seconds by a background thread while the compiled epochs run (the host
    hears from the trainer only at evaluations): it shows the elapsed time and, once one
    evaluation period has been timed, the epoch reached by estimate (``~epoch``), never past the
    next evaluation. ``wall0``: seconds already spent (a resumed run).
    """

    def __init__(
        self,
        stream: TextIO,
        epochs: int,
        start_epoch: int = 0,
        *,
        eval_every: int = 1,
        wall0: float = 0.0,
        width: int = 30,
        tick: float | None = 0.5,
    ):
        self.stream, self.epochs, self.width = stream, epochs, width
        self.eval_every, self.wall0, self.tick = eval_every, wall0, tick
        isatty = getattr(stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.epoch = start_epoch
        self._t0 = time.perf_counter()
        self._t_last = self._t0
        self._sec_per_epoch: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._bar_shown = False

    def _estimate(self, now: float) -> tuple[int, bool]:
        """(epoch to show, whether it is an estimate)."""
        if self._sec_per_epoch is None or self._sec_per_epoch <= 0:
            return self.epoch, False
        ahead = int((now - self._t_last) / self._sec_per_epoch)
        next_eval = min((self.epoch // self.eval_every + 1) * self.eval_every, self.epochs)
        shown = min(self.epoch + ahead, next_eval - 1)
        return max(shown, self.epoch), shown > self.epoch

    def _bar(self, now: float) -> str:
        epoch, estimated = self._estimate(now)
        done = int(self.width * epoch / self.epochs)
        bar = "#" * done + "-" * (self.width - done)
        mark = "~" if estimated else ""
        wall = self.wall0 + now - self._t0
        return f"[{bar}] {mark}{epoch}/{self.epochs} epochs  {wall:.1f}s"

    def _redraw(self) -> None:
        self.stream.write("\r\x1b[2K" + self._bar(time.perf_counter()))
        self.stream.flush()
        self._bar_shown = True

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            with self._lock:
                self._redraw()

    def start(self) -> None:
        """Draw the bar and start its ticker (on a terminal only)."""
        if not self.tty:
            return
        with self._lock:
            self._redraw()
        if self.tick:
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()

    def update(self, record: dict[str, Any]) -> None:
        """Print the line of one metrics record (and redraw the bar under it)."""
        now = time.perf_counter()
        with self._lock:
            done = record["epoch"] - self.epoch
            if done > 0 and self._t_last > self._t0:  # the first period includes compilation
                self._sec_per_epoch = (now - self._t_last) / done
            self.epoch, self._t_last = record["epoch"], now
            line = format_record(record, self.epochs)
            if self.tty:
                self.stream.write("\r\x1b[2K" + line + "\n")
                self._redraw()
            else:
                self.stream.write(line + "\n")
                self.stream.flush()

    def close(self) -> None:
        """Stop the ticker and end the bar's line."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            if self.tty and self._bar_shown:
                self.stream.write("\n")
                self.stream.flush()
                self._bar_shown = False
