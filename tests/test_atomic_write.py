"""Atomic writes: the final file has the permissions the umask gives any new file; nothing else is left."""

import os
import stat

import pytest

from difface.images import atomic_write_bytes


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_file_follows_the_umask_and_leaves_no_temporary(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.png", b"first")
        atomic_write_bytes(tmp_path / "a.png", b"second")  # replaces, never appends
    finally:
        os.umask(old)
    assert (tmp_path / "a.png").read_bytes() == b"second"
    assert stat.S_IMODE((tmp_path / "a.png").stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]

