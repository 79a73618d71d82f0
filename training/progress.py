"""The commands' progress bars: tqdm on a terminal; in a log file or a pipe, one plain line every few percent.

tqdm redraws its bar with carriage returns, which a log file keeps as one giant line. `progress()` takes
tqdm's arguments; when its stream is not a terminal it returns `LogLines`, which has the part of tqdm's
interface the commands use (update, set_postfix, set_description, refresh, close, iteration, `with`) and
writes `desc: 35% 350/1000 step [12 s, 29.1 step/s, loss=0.0412]` lines instead.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

EVERY_PERCENT = 5  # one line per this many percent (and the last)


def progress(iterable: Iterable | None = None, **kwargs: Any) -> Any:
    """tqdm(iterable, **kwargs) on a terminal, else LogLines(iterable, **kwargs)."""
    stream = kwargs.get("file") or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        from tqdm.auto import tqdm

        return tqdm(iterable, **kwargs)
    return LogLines(iterable, **kwargs)


class LogLines:
    """A tqdm stand-in for streams that are not terminals: a line per EVERY_PERCENT of `total`."""

    def __init__(self, iterable: Iterable | None = None, total: float | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, disable: bool = False, leave: bool | None = True,
                 file: Any = None, every: float = EVERY_PERCENT, **_ignored: Any) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        # a bar tqdm clears when done (leave=False) leaves nothing in a log either
        self.total, self.desc, self.unit, self.disable = total, desc, unit, disable or leave is False
        self.n = self.start = initial
        self.file, self.every = file, every
        self.postfix = ""
        self.t0 = time.perf_counter()
        self._next = self._percent() + every  # the first line comes after `every` percent of progress
        self._logged_n: int | None = None

    def _percent(self) -> float:
        return 100.0 * self.n / self.total if self.total else 0.0

    def line(self) -> str:
        dt = time.perf_counter() - self.t0
        rate = (self.n - self.start) / dt if dt > 0 else 0.0
        of = f"{self._percent():3.0f}% {self.n}/{self.total:g}" if self.total else f"{self.n}"
        extra = f", {self.postfix}" if self.postfix else ""
        head = f"{self.desc}: " if self.desc else ""
        return f"{head}{of} {self.unit} [{dt:.0f} s, {rate:.3g} {self.unit}/s{extra}]"

    def _write(self) -> None:
        if self.disable or self._logged_n == self.n:
            return
        stream = self.file or sys.stderr
        stream.write(self.line() + "\n")
        stream.flush()
        self._logged_n = self.n

    def update(self, n: float = 1) -> None:
        self.n += n
        if self.total and self._percent() + 1e-9 >= self._next:
            self._write()
            self._next = (self._percent() // self.every + 1) * self.every

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def refresh(self) -> None:
        """tqdm redraws here; a log gets no extra line."""

    def close(self) -> None:
        if self.n != self.start:  # the last line, unless nothing happened
            self._write()
        self.disable = True

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self.total or 0)
