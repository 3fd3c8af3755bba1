"""Exclusive file locks that the kernel releases when the holding process dies.

Why a module of its own (torch-free leaf): one run directory must have one writer (a SLURM requeue or a
second Snakemake must not train the same run twice), and a GPU slot of a workstation must have one
training job; both are the same problem. ``flock(2)`` solves it without stale locks: the lock belongs to
the open file, so SIGKILL, an OOM kill or a crash releases it at once, and nothing has to be cleaned up.

While held, the lock file holds one JSON line naming the holder (host, pid, when it started, its last
heartbeat), so a refused process can say who holds it, and ``fastcert status`` can show it. On a network
file system whose server does not honour ``flock`` (some NFS set-ups without lockd), two hosts could both
"acquire" the lock; as a fallback, a lock file still naming a holder on *another* host whose heartbeat is
younger than ``stale_after_s`` counts as held. A holder that is killed leaves its line behind; on the same
host that line is ignored (the kernel's lock is the truth), on another host it stops blocking once its
heartbeat is older than ``stale_after_s``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["FileLock", "Holder", "LockBusy", "is_locked", "read_holder"]

STALE_AFTER_S = 15 * 60.0  # a foreign holder whose heartbeat is older than this no longer blocks (fallback only)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Holder:
    """Who holds a lock: written into the lock file by the holder."""

    host: str
    pid: int
    since: str  # ISO 8601, UTC
    heartbeat: str  # ISO 8601, UTC; refreshed by FileLock.heartbeat()
    note: str = ""  # what the holder does, e.g. "training runs/x"

    def describe(self) -> str:
        note = f" ({self.note})" if self.note else ""
        return f"pid {self.pid} on {self.host} since {self.since}{note}"

    def heartbeat_age_s(self) -> float:
        try:
            beat = datetime.fromisoformat(self.heartbeat)
        except ValueError:
            return float("inf")
        return (datetime.now(UTC) - beat).total_seconds()


class LockBusy(Exception):
    """The lock is held by another live process (``holder`` is None when it could not be read)."""

    def __init__(self, path: Path, holder: Holder | None) -> None:
        self.path = path
        self.holder = holder
        who = holder.describe() if holder is not None else "another process"
        super().__init__(f"{path} is held by {who}")


def read_holder(path: str | os.PathLike[str]) -> Holder | None:
    """The holder line of a lock file, or None (no file, empty, or unreadable: never raises)."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
        fields = json.loads(text) if text else None
        return Holder(**fields) if isinstance(fields, dict) else None
    except (OSError, ValueError, TypeError):
        return None


def is_locked(path: str | os.PathLike[str]) -> bool:
    """Whether some process holds the lock now (probes with a shared lock, released at once)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's shared lock
    return False


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing), with the holder's line inside.

    :meth:`acquire` raises :class:`LockBusy` for a held lock, or with ``wait=True`` waits for the holder
    to finish; :meth:`try_acquire` only tries.
    """

    def __init__(self, path: str | os.PathLike[str], *, note: str = "", stale_after_s: float = STALE_AFTER_S) -> None:
        self.path = Path(path)
        self.note = note
        self.stale_after_s = stale_after_s
        self._fd: int | None = None
        self._since = ""

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True on success. Raises nothing for a busy lock."""
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: already held by this process")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        if not self._is_current(fd):  # the holder removed the file (remove()) while we had it open
            os.close(fd)
            return self.try_acquire()
        if self._foreign_holder_alive():
            os.close(fd)
            return False
        self._fd = fd
        self._since = _now()
        self._write(self._since)
        return True

    def acquire(
        self,
        *,
        wait: bool = False,
        poll_s: float = 1.0,
        on_wait: Callable[[Holder | None], None] | None = None,
    ) -> None:
        """Take the lock; if busy raise :class:`LockBusy`, or with ``wait`` poll until it is free.

        ``on_wait`` is called once, with the holder, before the first wait (to log a line saying so).
        """
        told = False
        while not self.try_acquire():
            holder = read_holder(self.path)
            if not wait:
                raise LockBusy(self.path, holder)
            if not told and on_wait is not None:
                on_wait(holder)
            told = True
            time.sleep(poll_s)

    def heartbeat(self) -> None:
        """Refresh the heartbeat in the holder line (the network-file-system fallback reads it)."""
        if self._fd is not None:
            self._write(self._since)

    def release(self) -> None:
        """Clear the holder line and release the lock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing releases the flock

    def remove(self) -> None:
        """Delete the lock file, then release the lock: for a holder that leaves a directory as it found it.

        Safe against a process that opened the file meanwhile: it then locks a deleted file, sees that
        (``try_acquire`` compares it with the path) and locks a new one instead."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.release()

    def _is_current(self, fd: int) -> bool:
        """Whether ``fd`` is still the file at ``self.path`` (not one deleted by :meth:`remove`)."""
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        opened = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (opened.st_dev, opened.st_ino)

    def _foreign_holder_alive(self) -> bool:
        """Fallback for file systems that do not honour flock across hosts (see the module docstring)."""
        holder = read_holder(self.path)
        if holder is None or holder.host == socket.gethostname():
            return False
        return holder.heartbeat_age_s() < self.stale_after_s

    def _write(self, since: str) -> None:
        assert self._fd is not None
        holder = Holder(host=socket.gethostname(), pid=os.getpid(), since=since, heartbeat=_now(), note=self.note)
        line = (json.dumps(asdict(holder)) + "\n").encode()
        os.pwrite(self._fd, line, 0)  # overwrite, then cut: a reader never finds the file empty mid-heartbeat
        os.ftruncate(self._fd, len(line))
        os.fsync(self._fd)
