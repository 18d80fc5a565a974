"""Atomic file writes and strict JSON.

Atomic writes go to a temporary file beside the target, then ``os.replace`` it: a reader never
sees a half-written file, an interrupted or failed write leaves the previous file (if any)
untouched and no temporary file behind, and the new file gets the usual permissions (umask),
unlike ``tempfile.mkstemp``'s 0600. Only a killed process (SIGKILL, power loss) can leave a
temporary file; ``remove_stale_temporaries`` deletes those of dead processes.

JSON is written strictly (``allow_nan=False``): a value that is not a finite number (a metric that
is undefined) is written as ``null``, never as the non-standard ``NaN``/``Infinity``.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

# ``.<stem>.<pid>.<8 hex>.tmp<suffix>`` (atomic_path) and ``.<name>.<pid>.tmp`` (DemoWriter)
_TEMP_NAME = re.compile(r"^\.(?P<base>.+?)\.(?P<pid>\d+)(?:\.[0-9a-f]{8})?\.tmp(?:\.[^.]+)?$")


@contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on a clean exit it replaces ``path``.

    The temporary name keeps ``path``'s suffix (writers that pick a format by suffix, like
    imageio or ``np.savez``, keep working) and carries the pid and a random token, so concurrent
    writers never share one. With ``fsync`` the data is flushed to disk before the rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file for {path}")
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def remove_stale_temporaries(folder: str | os.PathLike[str], base: str | None = None) -> list[Path]:
    """Delete the temporary files in ``folder`` that killed writers left behind; returns them.

    A temporary file carries its writer's pid in its name (``atomic_path``, ``DemoWriter``); it is
    stale when that process no longer exists (a live one may still be writing it). ``base``
    limits the search to the temporaries of one target (``"demos.h5"`` or its stem ``"demos"``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        m = _TEMP_NAME.match(path.name)
        if m is None or not path.is_file() or _pid_alive(int(m["pid"])):
            continue
        if base is not None and m["base"] not in (base, Path(base).stem):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process writes no temporary file while it looks for stale ones
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def strict_json(data: Any, **kwargs: Any) -> str:
    """``json.dumps`` with ``allow_nan=False``, non-finite floats (NaN, inf) written as ``null``."""
    return json.dumps(finite_or_none(data), allow_nan=False, **kwargs)


def finite_or_none(data: Any) -> Any:
    """``data`` with every non-finite float (also numpy scalars) replaced by ``None``."""
    if isinstance(data, dict):
        return {k: finite_or_none(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_none(v) for v in data]
    if isinstance(data, (float, np.floating)):
        return float(data) if math.isfinite(data) else None
    return data


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as strict, indented JSON to ``path`` atomically; returns the path."""
    return write_text_atomic(path, strict_json(data, indent=2) + "\n")
