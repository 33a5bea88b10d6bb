"""Progress of the report's steps: a bar redrawn in place on a terminal, plain lines elsewhere.

Each finished step is one line (``[ 3/20] label: summary (1.2 s)``), written where the caller
says. On a terminal, the step that is running is also shown as a bar on ``live`` (standard error
by default), redrawn in place with ``\\r`` and erased before the next finished line. When
``live`` is not a terminal (a log file, a pipe, CI, a test's ``StringIO``) no bar is drawn: the
output is the finished lines alone, with no ``\\r`` and no escape codes.

Examples:
  >>> import io
  >>> log = io.StringIO()  # not a terminal
  >>> bar = StepProgress(2, emit=lambda line: print(line, file=log), live=log)
  >>> bar.start("element-wise 1024x1024 float32")
  >>> bar.done("add 80.0 GB/s", seconds=1.25)
  >>> print(log.getvalue(), end="")
  [ 1/2] element-wise 1024x1024 float32: add 80.0 GB/s (1.2 s)
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

_ERASE_LINE = "\r\x1b[K"


def isatty(stream: TextIO | None) -> bool:
    """Whether ``stream`` is an interactive terminal (``False`` for ``None`` or a closed one)."""
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):
        return False


def bar(done: int, total: int, width: int = 20) -> str:
    """A text bar of ``done`` out of ``total`` steps.

    Examples:
      >>> bar(3, 4, width=8)
      '[######--]'
    """
    filled = round(width * done / total) if total else width
    return "[" + "#" * filled + "-" * (width - filled) + "]"


class StepProgress:
    """Progress of ``total`` steps: one line per finished step, a live bar on a terminal.

    Args:
      total: the number of steps.
      emit: receives each finished step's line (e.g. ``print``); ``None``: no lines.
      live: where the bar of the running step is drawn, if it is a terminal (default:
        ``sys.stderr``). Nothing is drawn on a stream that is not a terminal.
    """

    def __init__(
        self,
        total: int,
        *,
        emit: Callable[[str], None] | None = print,
        live: TextIO | None = None,
    ):
        self.total = total
        self.emit = emit
        self.live = live if live is not None else sys.stderr
        self.drawing = isatty(self.live)
        self.step = 0
        self.label = ""

    def start(self, label: str) -> None:
        """Starts the next step; on a terminal, draws the bar with ``label``."""
        self.step += 1
        self.label = label
        if self.drawing:
            text = f"{bar(self.step - 1, self.total)} {self.step}/{self.total} {label} ..."
            self.live.write(_ERASE_LINE + text)
            self.live.flush()

    def done(self, summary: str, *, seconds: float) -> None:
        """Finishes the running step: erases the bar, emits the step's line."""
        if self.drawing:
            self.live.write(_ERASE_LINE)
            self.live.flush()
        if self.emit is not None:
            self.emit(f"[{self.step:2d}/{self.total}] {self.label}: {summary} ({seconds:.1f} s)")
