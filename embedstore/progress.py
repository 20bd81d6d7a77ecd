"""Progress on stderr for the long commands: done of total, a rate and an ETA.

One small class so that encode, synth, finetune, agreement and report show the same bar. It is
silent unless enabled: the CLI enables it for table output, the API leaves it off by default.
May import: nothing in embedstore.
"""

from __future__ import annotations

import time


class Progress:
    """A rich progress bar: `what`, done of `total`, `unit`/s and time remaining; silent when disabled."""

    def __init__(self, what: str, total: int, unit: str = "images", enabled: bool = True):
        self.what, self.total, self.unit, self.enabled = what, int(total), unit, bool(enabled) and total > 0
        self.done, self._bar, self._task, self._start = 0, None, None, time.perf_counter()

    def __enter__(self) -> "Progress":
        self._start = time.perf_counter()
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn(self.what), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
                                     console=Console(stderr=True))
            self._bar.__enter__()
            self._task = self._bar.add_task(self.what, total=self.total, rate="")
        return self

    @property
    def rate(self) -> float:
        """Items per second so far."""
        return self.done / max(time.perf_counter() - self._start, 1e-9)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, advance=n, rate=f"{self.rate:.1f} {self.unit}/s")

    def __exit__(self, *exc) -> bool:
        if self._bar is not None:
            self._bar.__exit__(*exc)
        return False
