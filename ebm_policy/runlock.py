"""An exclusive lock on a folder (a run folder, an ``eval/`` folder) for the life of one job.

``FolderLock(folder, "train")`` takes an OS lock (``fcntl.flock``, POSIX) on ``<folder>/.lock``
and writes the holder's pid, job name and start time into it. A second process that tries to take
it gets ``FolderInUseError`` naming that pid. The OS drops the lock when its holder dies, however
it dies, so a lock left by a killed process is taken over (with a message naming the dead pid);
a clean release removes the file.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

LOCK_NAME = ".lock"


class FolderInUseError(RuntimeError):
    """Another live process holds the folder's lock."""


class FolderLock:
    """Context manager: hold ``<folder>/.lock`` exclusively (creates ``folder``).

    ``discard_folder()`` asks to delete the folder on release (a run that failed before writing
    anything worth keeping); it is deleted while the lock is still held.
    """

    def __init__(self, folder: str | os.PathLike[str], job: str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.job = job
        self._fd: int | None = None
        self._discard = False

    def __enter__(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(_read(fd))
                os.close(fd)
                raise FolderInUseError(
                    f"{self.folder} is in use by {holder}; wait for it to finish, stop it, or "
                    f"pick another folder"
                ) from None
            # The holder we waited for may have released and removed the file meanwhile; then
            # this lock is on a file nobody else will open: try again with the current one.
            try:
                current = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                current = False
            if current:
                break
            os.close(fd)
        previous = _read(fd)
        if previous:  # its holder died without releasing it (killed, power loss)
            print(
                f"{self.folder}: taking over the lock left by {_describe(previous)}, which is no "
                f"longer running",
                file=sys.stderr,
            )
        record = {
            "pid": os.getpid(),
            "job": self.job,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def discard_folder(self) -> None:
        """Delete the folder (and everything in it) when the lock is released."""
        self._discard = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is None:
            return
        if self._discard:
            for entry in self.folder.iterdir():
                if entry.name == LOCK_NAME:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        self.path.unlink(missing_ok=True)  # before the release: see the samestat check
        os.close(self._fd)  # releases the lock
        self._fd = None
        if self._discard:
            try:
                self.folder.rmdir()
            except OSError:  # someone created something in it meanwhile: leave it
                pass


def _read(fd: int) -> dict[str, object] | None:
    data = os.pread(fd, 4096, 0).decode(errors="replace").strip()
    if not data:
        return None
    try:
        record = json.loads(data)
    except json.JSONDecodeError:
        return {"pid": "?", "raw": data[:80]}
    return record if isinstance(record, dict) else {"pid": "?", "raw": data[:80]}


def _describe(record: dict[str, object] | None) -> str:
    if not record:
        return "another process"
    parts = [f"ibc-gym {record['job']}"] if record.get("job") else []
    parts += [f"since {record['since']}"] if record.get("since") else []
    pid = f"pid {record.get('pid', '?')}"
    return f"{pid} ({', '.join(parts)})" if parts else pid
