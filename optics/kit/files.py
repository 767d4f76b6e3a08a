"""Files that several processes share: atomic writes and an advisory lock.

A file written with :func:`write_text_atomic` is either the old one or the whole new one, never
a torn mix, even if the writer is killed halfway (temp file in the same folder, then
``os.replace``, which POSIX makes atomic). :func:`locked` holds an exclusive ``flock`` on a
lock file while a block runs, so one process makes a shared result while the others wait.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["write_text_atomic", "locked"]


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temp file named after this process, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def locked(path):
    """An exclusive advisory lock on ``path`` (created if missing) while the block runs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
