"""Where privlens keeps its cache, and user-supplied names that become paths.

``PRIVLENS_HOME`` (default ``~/.cache/privlens``) holds the package sources, converted model
weights, the built fake mirror library and the demo face corpus. It is resolved here only.
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

__all__ = ["privlens_home", "home_subdir", "confined_name", "confined_path"]


def privlens_home() -> Path:
    """``$PRIVLENS_HOME`` (``~`` expanded), else ``~/.cache/privlens``."""
    env = os.environ.get("PRIVLENS_HOME")
    return Path(env or "~/.cache/privlens").expanduser()


def home_subdir(name: str) -> Path:
    """A folder of the cache: ``sources``, ``models``, ``build`` or ``demo-faces``."""
    return privlens_home() / name


def confined_name(name, what: str = "name") -> str:
    """Check a user-supplied name (a session, run, export or dataset name) that becomes one
    path component inside a folder the user chose; return it unchanged.

    Refused, with a one-line ``ValueError`` naming ``what``: empty names, ``.`` and ``..``,
    path separators (``/`` and ``\\``), absolute paths, drive letters, and control characters.
    """
    text = "" if name is None else str(name)
    if not text.strip():
        raise ValueError(f"{what} name is empty")
    bad = [c for c in text if unicodedata.category(c).startswith("C")]
    if bad:
        raise ValueError(f"{what} name {text!r} contains a control character")
    if text in (".", "..") or "/" in text or "\\" in text or os.sep in text \
            or (os.altsep and os.altsep in text) or ":" in text[1:2]:
        raise ValueError(f"{what} name {text!r} must be a plain name, not a path "
                         f"(no '/', '\\\\', '..', or drive)")
    return text


def confined_path(folder, name, suffix: str = "", what: str = "name") -> Path:
    """``folder / (name + suffix)`` for a :func:`confined_name`; the result is checked to
    lie inside ``folder``."""
    base = Path(folder)
    path = base / (confined_name(name, what) + suffix)
    if base.resolve() not in path.resolve().parents:
        raise ValueError(f"{what} name {name!r} leads outside {base}")
    return path
