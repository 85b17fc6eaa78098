"""Progress of long transfers and restores on stderr: rich bars on a terminal, plain lines elsewhere.

The library reports progress as `(stage, done, total)` calls (`snapshot.restored.Progress`), e.g.
`("download", 3, 10)` for the third of ten snapshot parts. `ProgressPrinter` turns them into:

- on a terminal: one rich bar per stage with the count, the rate (items per second) and the time left,
  redrawn by rich at most `refresh_per_second` times a second;
- anywhere else (a pipe, a log file, CI): two plain lines per stage, when it starts and when it ends
  ("download: 10/10 in 1.3 s, 7.7/s"), so logs stay readable and grep-able — no carriage returns;
- with `quiet`: nothing.

No hand-made throttling: a terminal is redrawn by rich, and a log gets events, not samples.
"""

from __future__ import annotations

import atexit
import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Items per second (parts, deltas): rich's own speed column counts bytes."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-/s" if speed is None else f"{speed:,.1f}/s", style="progress.data.speed")


class ProgressPrinter:
    """A `Progress` callback for the operator tools (see the module docstring). Call `close()` when done;
    an unclosed bar is closed at interpreter exit so the terminal's cursor always comes back."""

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False, refresh_per_second: float = 8):
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.refresh_per_second = refresh_per_second
        isatty = getattr(self.stream, "isatty", None)
        self.terminal = bool(isatty and isatty())
        self._bars: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        #: plain mode: stage -> (start time, last total); a stage is open until it completes.
        self._open: dict[str, tuple[float, int]] = {}
        self._counted: set[str] = set()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.terminal:
            self._bar(stage, done, total)
        else:
            self._line(stage, done, total)

    # -- a terminal: rich bars --------------------------------------------------------------------------

    def _bar(self, stage: str, done: int, total: int) -> None:
        if self._bars is None:
            self._bars = Progress(
                TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=Console(file=self.stream), refresh_per_second=self.refresh_per_second)
            self._bars.start()
            _LIVE.add(self)
            atexit.register(self.close)
        task = self._tasks.get(stage)
        if task is None:
            task = self._tasks[stage] = self._bars.add_task(stage, total=total or None)
        self._bars.update(task, completed=done, total=total or None)

    # -- anything else: a line when a stage starts and one when it ends -----------------------------------

    def _line(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not total:  # a count without a known end (documents discovered): say it once
            if stage not in self._counted:
                self._counted.add(stage)
                self._write(f"{stage}: {done}")
            return
        if stage not in self._open:
            if done >= total:  # a stage that starts finished (one part, or nothing to do)
                self._write(f"{stage}: {done}/{total}")
                return
            self._open[stage] = (now, total)
            self._write(f"{stage}: 0/{total} ...")
            if done == 0:
                return
        start, _ = self._open[stage]
        self._open[stage] = (start, total)
        if done >= total:
            del self._open[stage]
            took = now - start
            rate = f", {done / took:,.1f}/s" if took > 0 else ""
            self._write(f"{stage}: {done}/{total} in {took:.1f} s{rate}")

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
        _LIVE.discard(self)
        atexit.unregister(self.close)


#: printers with bars on screen: `close_all` (the tools' `run`) stops them before the tool's last words.
_LIVE: set[ProgressPrinter] = set()


def close_all() -> None:
    for printer in list(_LIVE):
        printer.close()
