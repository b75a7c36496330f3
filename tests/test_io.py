"""Atomic file writing: all or nothing, no temporary left behind, a plain file's permissions."""
import json
import math
import os
import stat

import pytest

from detect.io import atomic_write_bytes, atomic_write_json, atomic_write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.json"
    atomic_write_json(path, {"a": 1})  # parent folder created
    assert json.loads(path.read_text()) == {"a": 1}

    def fail(f):
        f.write(b"partial")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        atomic_write_bytes(path, fail)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["out.json"]


def test_written_files_are_readable_by_others_and_json_has_no_nan(tmp_path):
    path = tmp_path / "t.txt"
    atomic_write_text(path, "héllo")
    assert path.read_text(encoding="utf-8") == "héllo"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(NotADirectoryError, match="Not a directory"):
        atomic_write_text(path / "under_a_file.txt", "x")
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "nan.json", {"AP": math.nan})
    assert not (tmp_path / "nan.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]
