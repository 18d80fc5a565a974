"""Atomic writes (``ebm_policy.fileio``): all or nothing, usual permissions, no temp left."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ebm_policy.fileio import atomic_path, write_text_atomic


def umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@pytest.mark.parametrize("existing", [False, True])
def test_success_replaces_the_file_with_default_permissions(tmp_path: Path, existing: bool) -> None:
    path = tmp_path / "sub" / "out.json"
    if existing:
        path.parent.mkdir()
        path.write_text("old")
    assert write_text_atomic(path, "new") == path
    assert path.read_text() == "new"
    assert path.stat().st_mode & 0o777 == umask_mode()
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.json"]


def test_failure_keeps_the_previous_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"previous")
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt  # an interrupted write, not only an exception
    assert path.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [path]


def test_temp_name_keeps_the_suffix_for_format_sniffing_writers(tmp_path: Path) -> None:
    path = tmp_path / "snapshots.npz"
    with atomic_path(path) as tmp:
        assert tmp.suffix == ".npz" and tmp.parent == tmp_path and tmp.name.startswith(".")
        np.savez(tmp, a=np.arange(3))  # np.savez would append .npz to any other suffix
    assert np.load(path)["a"].tolist() == [0, 1, 2]


def test_writing_nothing_is_an_error_not_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "x.txt"
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(path):
        pass
    assert not path.exists()
