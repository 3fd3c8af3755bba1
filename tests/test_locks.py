"""fastcert.locks with real processes: one holder at a time, a killed holder frees the lock at once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from fastcert.locks import FileLock, Holder, LockBusy, is_locked, read_holder

HOLD = """
import sys, time
from fastcert.locks import FileLock
lock = FileLock(sys.argv[1], note="test holder")
lock.acquire(wait=len(sys.argv) > 2)
print("held", flush=True)
time.sleep(60)
"""


def _holder_process(path: Path, *extra: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path), *extra], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc


def _wait_held(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"


def test_second_holder_is_refused_with_the_holders_name_and_a_sigkill_frees_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    proc = _holder_process(path)
    try:
        _wait_held(proc)
        assert is_locked(path)
        with pytest.raises(LockBusy) as busy:
            FileLock(path).acquire()
        assert busy.value.holder is not None
        assert busy.value.holder.pid == proc.pid
        assert f"pid {proc.pid}" in str(busy.value) and "test holder" in str(busy.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not is_locked(path)  # the kernel released it with the process; its stale line does not block
    lock = FileLock(path)
    lock.acquire()
    holder = read_holder(path)
    assert holder is not None and holder.pid == os.getpid()
    lock.release()
    assert read_holder(path) is None and not is_locked(path)


def test_a_waiting_process_takes_the_lock_when_the_holder_dies(tmp_path: Path) -> None:
    path = tmp_path / "slot.lock"
    first = FileLock(path)
    first.acquire()
    waiter = _holder_process(path, "--wait")
    try:
        time.sleep(1.5)
        assert waiter.poll() is None  # still waiting
        first.release()
        _wait_held(waiter)
        assert read_holder(path) is not None and read_holder(path).pid == waiter.pid  # type: ignore[union-attr]
    finally:
        waiter.kill()
        waiter.wait()


def test_a_fresh_foreign_holder_line_blocks_and_a_stale_one_does_not(tmp_path: Path) -> None:
    """The network-file-system fallback: flock may succeed although another host holds the lock."""
    path = tmp_path / "nfs.lock"
    fresh = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    foreign = Holder(host=socket.gethostname() + "-elsewhere", pid=1, since="x", heartbeat=fresh)
    path.write_text(json.dumps(asdict(foreign)) + "\n")
    with pytest.raises(LockBusy):
        FileLock(path).acquire()
    stale = replace(foreign, heartbeat="2000-01-01T00:00:00+00:00")
    path.write_text(json.dumps(asdict(stale)) + "\n")
    lock = FileLock(path)
    lock.acquire()
    lock.release()


def test_a_process_that_opened_a_lock_file_before_its_holder_removed_it_locks_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """remove() (a run leaving a directory as it found it) races with a process that has the old
    file open: its flock then succeeds on a deleted file, which must not count as holding the lock."""
    path = tmp_path / "run.lock"
    holder = FileLock(path)
    holder.acquire()
    opened_before = os.open(path, os.O_RDWR)
    holder.remove()
    assert not path.exists()
    real_open, first = os.open, [opened_before]
    monkeypatch.setattr(os, "open", lambda *args, **kwargs: first.pop() if first else real_open(*args, **kwargs))
    second = FileLock(path)
    assert second.try_acquire()
    assert path.exists() and is_locked(path)  # the lock lives in the file a third process would open
    assert read_holder(path) is not None and read_holder(path).pid == os.getpid()  # type: ignore[union-attr]
    second.release()


def test_the_holder_line_stays_readable_while_the_holder_beats(tmp_path: Path) -> None:
    """A refused process reads the line while the holder rewrites it once per epoch: it must never
    find the file empty (it would then name "another process" instead of the holder)."""
    path = tmp_path / "run.lock"
    lock = FileLock(path)
    lock.acquire()
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            lock.heartbeat()

    thread = threading.Thread(target=beat)
    thread.start()
    try:
        unread = sum(read_holder(path) is None for _ in range(3000))
    finally:
        stop.set()
        thread.join()
    lock.release()
    assert unread == 0
