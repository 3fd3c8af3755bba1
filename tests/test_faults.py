"""Fault injection on a run directory: damage each file a run writes (truncated, garbage, empty),
resume, and check that every case ends with the uninterrupted run's result or with a RunError that
names the damaged file and leaves the directory as it was; nothing finished is lost."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fastcert.records import METRICS_FILE, RESULT_FILE, read_metrics, read_result
from fastcert.run.lifecycle import EXIT_COMPLETED, RunError, execute, load_checkpoint
from fastcert.run.spec import validate

EPOCHS = 4
SPEC = validate(
    {
        "dataset": "mnist",
        "data": {"source": "synthetic", "train_size": 96, "test_size": 48},
        "model": "cnn7",
        "width": 0.0625,
        "method": "ours",
        "schedule": {"start": 1, "length": 1, "epochs": EPOCHS, "milestones": [3]},
        "eps_train": 0.05,
        "eps_test": 0.05,
        "batch_size": 16,
        "seed": 11,
        "device": "cpu",
    }
)
BEST_EPOCH = 2  # the first epoch at eps_target; no later epoch verifies more of this tiny model


def quiet(_: str) -> None:
    """Swallow the per-epoch log lines."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, Path]]:
    """The uninterrupted run, and runs stopped by SIGTERM after epoch 2 (the best epoch is the last
    checkpoint's) and after epoch 3 (the best epoch is older)."""
    base = tmp_path_factory.mktemp("faults")
    reference = base / "reference"
    assert execute(SPEC, reference, log=quiet) == EXIT_COMPLETED
    assert read_result(reference / RESULT_FILE)["best"]["epoch"] == BEST_EPOCH
    interrupted = {}
    for stop_after in (2, 3):

        def stop(line: str, stop_after: int = stop_after) -> None:
            if line.startswith(f"epoch {stop_after}/"):
                os.kill(os.getpid(), signal.SIGTERM)  # the run's own handler: saves, then stops

        interrupted[stop_after] = base / f"stopped-{stop_after}"
        assert execute(SPEC, interrupted[stop_after], log=stop) == 128 + signal.SIGTERM
        assert len(read_metrics(interrupted[stop_after] / METRICS_FILE)) == stop_after
    return reference, interrupted


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def assert_same_run(out: Path, reference: Path) -> None:
    """The resumed directory holds the uninterrupted run: every epoch, both checkpoints, the result."""

    def numbers(path: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in ("epoch_time", "resumed")} for r in read_metrics(path)]

    assert numbers(out / METRICS_FILE) == numbers(reference / METRICS_FILE)
    result, expected = (read_result(d / RESULT_FILE) for d in (out, reference))
    assert result["status"] == "completed" and (result["best"], result["last"]) == (expected["best"], expected["last"])
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        got, want = load_checkpoint(out / name), load_checkpoint(reference / name)
        assert got["epoch"] == want["epoch"]
        assert all(torch.equal(got["model"][k], want["model"][k]) for k in want["model"])


def truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def garbage(data: bytes) -> bytes:
    return os.urandom(max(len(data), 64))


def empty(data: bytes) -> bytes:
    return b""


def torn_extra_line(data: bytes) -> bytes:
    """A half-written line after the complete ones (a non-atomic writer killed mid-line)."""
    return data + data.splitlines(keepends=True)[-1][:40]


DAMAGES: dict[str, Callable[[bytes], bytes]] = {"truncate": truncate, "garbage": garbage, "empty": empty}
# What damaging each file of the run stopped after epoch 3 gives: the uninterrupted result
# ("resume") or a RunError naming the file ("error").
OUTCOMES = {
    "spec.json": "error",
    "metrics.jsonl": "error",  # the last checkpoint needs every line of this 3-epoch file
    "result.json": "resume",  # only a summary: rewritten
    "checkpoint_last.pt": "error",
    "checkpoint_best.pt": "error",  # the best epoch (2) is older than the last checkpoint: its weights are lost
}
CASES = [(3, name, damage, outcome) for name, outcome in OUTCOMES.items() for damage in DAMAGES] + [
    (3, "metrics.jsonl", "torn_extra_line", "resume"),  # a torn line no checkpoint needs: dropped
    *[(2, "checkpoint_best.pt", damage, "resume") for damage in DAMAGES],  # rebuilt from the last checkpoint
]


@pytest.mark.parametrize(("stopped", "name", "damage", "outcome"), CASES)
def test_damaged_file_then_resume(
    runs: tuple[Path, dict[int, Path]], tmp_path: Path, stopped: int, name: str, damage: str, outcome: str
) -> None:
    reference, interrupted = runs
    out = tmp_path / "run"
    shutil.copytree(interrupted[stopped], out)
    damaged = out / name
    damaged.write_bytes({**DAMAGES, "torn_extra_line": torn_extra_line}[damage](damaged.read_bytes()))
    before = snapshot(out)
    if outcome == "error":
        with pytest.raises(RunError) as error:
            execute(SPEC, out, log=quiet)
        message = str(error.value)
        assert message.startswith(str(damaged)) and "\n" not in message, message
        assert "delete" in message or "restore" in message  # says what to do
        assert snapshot(out) == before  # nothing written, nothing lost
    else:
        assert execute(SPEC, out, log=quiet) == EXIT_COMPLETED
        assert_same_run(out, reference)


def test_a_damaged_last_checkpoint_resumes_from_the_best_one_as_its_error_says(
    runs: tuple[Path, dict[int, Path]], tmp_path: Path
) -> None:
    """The advice of the error is safe: a best checkpoint is a complete training state, so resuming
    from it replays the later epochs bit-identically."""
    reference, interrupted = runs
    out = tmp_path / "run"
    shutil.copytree(interrupted[3], out)
    (out / "checkpoint_last.pt").write_bytes(truncate((out / "checkpoint_last.pt").read_bytes()))
    with pytest.raises(RunError, match=rf"copy checkpoint_best\.pt \(epoch {BEST_EPOCH}\) over it") as error:
        execute(SPEC, out, log=quiet)
    assert "not a readable checkpoint" in str(error.value)
    shutil.copyfile(out / "checkpoint_best.pt", out / "checkpoint_last.pt")
    assert execute(SPEC, out, log=quiet) == EXIT_COMPLETED
    assert_same_run(out, reference)


def test_stray_temporary_files_are_deleted_on_resume(
    runs: tuple[Path, dict[int, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference, interrupted = runs
    out = tmp_path / "run"
    shutil.copytree(interrupted[3], out)
    ours = [out / ".checkpoint_last.pt.k1ll3d.tmp", out / ".metrics.jsonl.x9.tmp"]
    foreign = out / ".notes.txt.a1.tmp"
    for path in ours + [foreign]:
        path.write_bytes(b"\0" * 4096)
    assert execute(SPEC, out, log=quiet) == EXIT_COMPLETED
    assert not any(p.exists() for p in ours) and foreign.exists()
    err = capsys.readouterr().err
    assert all(str(p) in err for p in ours)
    assert_same_run(out, reference)


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_completed_run_with_a_damaged_result_is_recognized_not_retrained(
    runs: tuple[Path, dict[int, Path]], tmp_path: Path, damage: str
) -> None:
    reference, _ = runs
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / RESULT_FILE).write_bytes(DAMAGES[damage]((out / RESULT_FILE).read_bytes()))
    lines: list[str] = []
    assert execute(SPEC, out, log=lines.append) == EXIT_COMPLETED
    assert not any(line.startswith("epoch ") for line in lines)  # the last checkpoint is the final epoch
    assert_same_run(out, reference)
