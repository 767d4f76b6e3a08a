"""Atomic writes: the target is the old file or the whole new one, and no temp file stays."""

import numpy as np
import pytest

from optics.kit.files import atomic_path, write_text_atomic


def test_atomic_path_replaces_or_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed halfway")
    assert target.read_text() == "old"
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.json"]


def test_atomic_path_keeps_the_suffix_for_writers_that_add_it(tmp_path):
    target = tmp_path / "e.npz"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path
        np.savez(tmp, x=np.arange(3))
    with np.load(target) as z:
        assert z["x"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["e.npz"]
