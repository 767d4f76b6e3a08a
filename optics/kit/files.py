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

__all__ = ["atomic_path", "write_text_atomic", "locked"]


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside ``path`` (hidden, named after this process, same suffix, so
    writers that add a suffix such as ``np.savez`` keep it); when the block ends, rename it
    onto ``path``. On an error the temp file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


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
