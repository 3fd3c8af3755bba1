"""``fastcert train`` as a child process, for the kill-and-resume tests (tests/test_run.py on CPU,
tests/test_cuda.py on a GPU)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastcert.records import METRICS_FILE, read_metrics


def launch(spec: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fastcert.run.cli", "train", "--spec", str(spec), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_epochs(out: Path, proc: subprocess.Popen, n: int, timeout: float = 240) -> None:
    """Wait until ``n`` epochs are recorded in metrics and checkpointed (metrics are written first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        checkpointed = (out / "checkpoint_last.pt").exists()
        if checkpointed and len(read_metrics(out / METRICS_FILE)) >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.005)
    pytest.fail(f"no {n} epoch(s) in {out} after {timeout} s")
