"""Progress for long work: a tqdm bar on a terminal, sparse plain lines elsewhere.

When standard error is not a terminal (a log file, CI, ``make demo > log``), a bar's ``\\r``
redraws would fill the log with hundreds of frames. :func:`progress_bar` then prints one line
each time another ``every_pct`` percent is done (and one at the end) instead.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

__all__ = ["progress_bar", "is_terminal"]


def is_terminal(stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """The subset of tqdm's interface privlens uses, printing a line every ``every_pct``."""

    def __init__(self, iterable=None, total=None, desc: str = "", unit: str = "it",
                 initial: int = 0, disable: bool = False, every_pct: float = 10.0,
                 stream=None, **_ignored):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit = total, desc, unit
        self.n = int(initial)
        self.disable = disable
        self.every = max(float(every_pct), 1e-9)
        self.stream = sys.stderr if stream is None else stream
        self.postfix = ""
        self._t0 = time.perf_counter()
        self._last_pct = self._pct() // self.every * self.every if total else 0.0
        self._closed = False

    def _pct(self) -> float:
        return 100.0 * self.n / self.total if self.total else 0.0

    def _line(self) -> None:
        if self.disable:
            return
        dt = time.perf_counter() - self._t0
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" {self._pct():3.0f}%" if self.total else ""
        post = f" [{self.postfix}]" if self.postfix else ""
        print(f"{self.desc or 'progress'}:{pct} {done} {self.unit} in {dt:.0f} s{post}",
              file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.total and self._pct() >= self._last_pct + self.every and self.n < self.total:
            self._last_pct = self._pct() // self.every * self.every
            self._line()

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh=True) -> None:
        self.postfix = s

    def set_description(self, desc=None, refresh=True) -> None:
        self.desc = desc or ""

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._line()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress_bar(iterable=None, *, stream=None, **kwargs):
    """``tqdm(iterable, **kwargs)`` on a terminal; a :class:`LineProgress` otherwise."""
    if is_terminal(stream):
        kwargs.pop("every_pct", None)
        return tqdm(iterable, **kwargs) if iterable is not None else tqdm(**kwargs)
    return LineProgress(iterable, stream=stream, **kwargs)
