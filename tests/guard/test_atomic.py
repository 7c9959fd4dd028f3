"""``atomic_directory``: all or nothing, and readable like a plain ``mkdir``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from guard.atomic import atomic_directory


def test_replaces_the_target_only_on_success(tmp_path: Path) -> None:
    out = tmp_path / "a"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_directory(out) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (out / "old.txt").exists()  # untouched until the end
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["a"]  # no temporary left


def test_a_failed_write_leaves_the_old_directory_and_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "a"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_directory(out) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("disk full")
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["a"]


def test_mode_is_mkdirs_not_mkdtemps(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "x" / "a") as tmp:
            assert tmp.stat().st_mode & 0o777 == 0o755
        os.umask(0o077)
        with atomic_directory(tmp_path / "b") as tmp:
            assert tmp.stat().st_mode & 0o777 == 0o700
    finally:
        os.umask(old)
    assert (tmp_path / "x" / "a").stat().st_mode & 0o777 == 0o755
