"""Progress of a long job: a tqdm bar on a terminal, a log line every few seconds elsewhere.

A bar redraws itself with carriage returns; written into a log file (`aduan up` trains in the
background into one) it piled up 160 KB in 14 minutes. Where stderr is not a terminal the same
calls log `desc: n/total unit (rate/s, postfix)` at most every `LOG_EVERY_S` seconds, and once
at the end.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")
LOG_EVERY_S = 5.0
log = logging.getLogger("aduan.progress")


class LogProgress(Generic[T]):
    """The part of tqdm's interface aduan uses (iterate, update, set_postfix, close), as
    log lines."""

    def __init__(
        self,
        iterable: Iterable[T] | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
        disable: bool = False,
        every: float = LOG_EVERY_S,
    ) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.unit = unit.strip() or "it"
        self.n = initial
        self.disable = disable
        self.every = every
        self.postfix: dict[str, Any] = {}
        self.started = self.last = time.monotonic()
        self.logged_n = initial

    def __iter__(self) -> Iterator[T]:
        if self.iterable is None:
            raise TypeError("a progress without an iterable is driven by update()")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self._log(now)

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        if self.n != self.logged_n:
            self._log(time.monotonic())

    def _log(self, now: float) -> None:
        self.last = now
        self.logged_n = self.n
        if self.disable:
            return
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        rate = self.n / max(now - self.started, 1e-9)
        details = [f"{rate:.1f} {self.unit}/s", *(f"{k}={v}" for k, v in self.postfix.items())]
        log.info("%s: %s %s (%s)", self.desc, count, self.unit, ", ".join(details))


def on_terminal() -> bool:
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


def progress(iterable: Iterable[T] | None = None, **options: Any) -> Any:
    """A tqdm bar (on stderr) when stderr is a terminal, else `LogProgress`; the options are
    tqdm's `total`, `desc`, `unit`, `initial` and `disable`."""
    if on_terminal():
        from tqdm import tqdm

        return tqdm(iterable, **options)
    return LogProgress(iterable, **options)
