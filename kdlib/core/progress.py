"""Progress bars that suit both a terminal and a log: a live tqdm bar on a TTY, a few plain lines elsewhere.

Written to a file or a CI log, a tqdm bar floods it with one carriage-returned line per refresh. Off a TTY,
:func:`progress_bar` instead writes a line each tenth of the total (at most one each 5 s, so a quick bar writes none)
or each minute when progress is slow or the total unknown, and one summary line when the bar closes: what it
counted, how far it got, how long it took, the rate and the last postfix.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from tqdm.auto import tqdm as terminal_tqdm
from tqdm.std import tqdm

LOG_FRACTION = 0.1
LOG_INTERVAL_S = 60.0
LOG_MIN_GAP_S = 5.0
LOG_MININTERVAL_S = 1.0


def is_interactive(stream: Any) -> bool:
    """Whether ``stream`` is a terminal (False for files, pipes, closed streams and objects without ``isatty``)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except (ValueError, OSError):
        return False


class LogProgress(tqdm):
    """A tqdm bar for non-interactive output: an occasional plain line while it runs and a summary line at close."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._summary_wanted = kwargs.pop("leave", True) is not False
        kwargs.setdefault("mininterval", LOG_MININTERVAL_S)
        self._last_line_t = time.monotonic()
        self._next_line_n = 0.0
        super().__init__(*args, leave=False, **kwargs)
        self._next_line_n = self._line_step()

    def _line_step(self) -> float:
        return self.total * LOG_FRACTION if self.total else math.inf

    def _status(self) -> tuple[str, str, str]:
        """The description prefix, the count (``n/total unit`` or ``n unit``) and the elapsed time, rate and postfix."""
        elapsed = self.format_dict["elapsed"]
        label = self.desc.removesuffix(": ")  # set_description appends ": "
        prefix = f"{label}: " if label else ""
        count = f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"
        timing = [self.format_interval(elapsed)]
        if self.n and elapsed > 0:
            timing.append(f"{self.n / elapsed:.2f} {self.unit}/s")
        if self.postfix:
            timing.append(str(self.postfix))
        return prefix, count, ", ".join(timing)

    def _write_line(self, line: str) -> None:
        self.fp.write(line + "\n")
        self.fp.flush()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """Write a progress line when a tenth of the total (and 5 s) or a minute has passed since the last one; the
        end is left to the summary line."""
        if msg is not None or not self.n or (self.total and self.n >= self.total):
            return False
        now = time.monotonic()
        gap = now - self._last_line_t
        if gap < LOG_INTERVAL_S and (self.n < self._next_line_n or gap < LOG_MIN_GAP_S):
            return False
        prefix, count, timing = self._status()
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        self._write_line(f"{prefix}{count}{share} after {timing}")
        self._last_line_t = now
        step = self._line_step()
        self._next_line_n = (math.floor(self.n / step) + 1) * step if math.isfinite(step) else step
        return True

    def close(self) -> None:
        """Write the summary line (unless ``leave=False``) and close the bar."""
        if not self.disable and self._summary_wanted:
            prefix, count, timing = self._status()
            verb = "stopped at" if self.total and self.n < self.total else "done"
            self._write_line(f"{prefix}{verb} {count} in {timing}")
        super().close()


def progress_bar(
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    disable: bool = False,
    file: TextIO | None = None,
    **options: Any,
) -> tqdm:
    """A tqdm bar on ``file`` (default stderr): the usual live bar on a terminal, :class:`LogProgress` otherwise.

    ``options`` go to tqdm unchanged (``leave``, ``position``, ...).
    """
    stream = sys.stderr if file is None else file
    bar_class = terminal_tqdm if disable or is_interactive(stream) else LogProgress
    return bar_class(total=total, desc=desc, unit=unit, disable=disable, file=stream, **options)


@contextmanager
def datasets_progress(progress: bool) -> Iterator[None]:
    """Silence the progress bars of ``datasets`` unless ``progress``; restore them only if they were on (turning them
    on against ``HF_DATASETS_DISABLE_PROGRESS_BARS`` would warn)."""
    import datasets

    silence = not progress and datasets.is_progress_bar_enabled()
    if silence:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if silence:
            datasets.enable_progress_bars()
