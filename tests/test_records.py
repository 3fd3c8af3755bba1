"""fastcert.records: what the real writer (fastcert.run.lifecycle) leaves in a run directory reads back
through the one reader as the typed records say, and a damaged metrics file is refused or, for a
torn last line only, recovered."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_type_hints

import pytest
import torch

from fastcert.io import atomic_write_jsonl
from fastcert.records import (
    METRICS_FILE,
    RESULT_FILE,
    DataDetail,
    EpochSummary,
    MetricsRecord,
    Phase,
    PrecisionDetail,
    Provenance,
    RecordError,
    Result,
    Status,
    epoch_summary,
    read_metrics,
    read_result,
    split_metrics,
)
from fastcert.run.lifecycle import EXIT_COMPLETED, _RunDir, execute, provenance
from fastcert.run.spec import validate

SPEC = validate(
    {
        "dataset": "mnist",
        "data": {"source": "synthetic", "train_size": 32, "test_size": 16},
        "model": "cnn7",
        "width": 0.0625,
        "method": "ours",
        "schedule": {"start": 2, "length": 1, "epochs": 3, "milestones": []},
        "eps_train": 0.05,
        "eps_test": 0.05,
        "batch_size": 16,
        "device": "cpu",
    }
)


def keys(typed: Any) -> list[str]:
    return list(get_type_hints(typed))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A completed run written by the real writer: one epoch in each phase."""
    out = tmp_path_factory.mktemp("records") / "run"
    assert execute(SPEC, out, log=lambda line: None) == EXIT_COMPLETED
    return out


def test_the_result_written_reads_back_as_the_typed_record(run: Path) -> None:
    result = read_result(run / RESULT_FILE)
    assert result == json.loads((run / RESULT_FILE).read_text(encoding="utf-8"))
    assert list(result) == keys(Result)  # every key of the record, in its order, and no other
    assert result["status"] is Status.COMPLETED and result["epochs_completed"] == 3
    assert result["best"] is not None and result["last"] is not None and list(result["best"]) == keys(EpochSummary)
    assert result["data"] is not None and list(result["data"]) == keys(DataDetail)
    assert list(result["precision"]) == keys(PrecisionDetail) and list(result["provenance"]) == keys(Provenance)
    assert list(result["epoch_time"]) == list(Phase) == ["eps0", "ramp", "target"]
    assert all(isinstance(seconds, float) for seconds in result["epoch_time"].values())


def test_the_metrics_written_read_back_as_typed_records_and_rewrite_byte_identically(run: Path, tmp_path: Path) -> None:
    records = read_metrics(run / METRICS_FILE)
    assert [record["epoch"] for record in records] == [1, 2, 3]
    assert all(list(record) == keys(MetricsRecord) for record in records)
    assert [record["phase"] for record in records] == [Phase.EPS0, Phase.RAMP, Phase.TARGET]
    assert split_metrics(records[-1], "test") is records[-1]["test"]
    result = read_result(run / RESULT_FILE)
    assert result["last"] == epoch_summary(records[-1])
    assert result["best"] == epoch_summary(records[-1])  # the only epoch at the target ε
    copy = tmp_path / METRICS_FILE
    atomic_write_jsonl(copy, records)  # what a resumed run writes from what it read
    assert copy.read_bytes() == (run / METRICS_FILE).read_bytes()


@pytest.mark.parametrize("status", [Status.DIVERGED, Status.INTERRUPTED])
def test_a_stopped_run_s_result_reads_back_with_its_detail(tmp_path: Path, status: Status) -> None:
    run_dir = _RunDir(tmp_path, SPEC)
    detail: dict[str, Any] = (
        {"diverged": {"epoch": 2, "reason": "non-finite loss"}}
        if status is Status.DIVERGED
        else {"interrupted": {"signal": "SIGTERM", "completed_epochs": 0}}
    )
    written = run_dir.write_result(status, provenance(SPEC, torch.device("cpu")), None, **detail)
    text = (tmp_path / RESULT_FILE).read_text(encoding="utf-8")
    assert f'"status": "{status}"' in text  # plain strings in the JSON
    result = read_result(tmp_path / RESULT_FILE)
    assert result == written and result["status"] is status and list(result) == keys(Result)
    assert json.loads(text)[status.value] == detail[status.value]
    assert result["best"] is None and result["last"] is None and result["data"] is None


def test_the_json_values_of_statuses_and_phases_stay_as_written() -> None:
    """Run directories already on disk hold these strings; renaming a member must not change them."""
    assert [str(status) for status in Status] == ["completed", "diverged", "interrupted", "missing"]
    assert [str(phase) for phase in Phase] == ["eps0", "ramp", "target"]
    assert json.dumps({Phase.EPS0: Status.COMPLETED}) == '{"eps0": "completed"}'


def _metrics_lines(run: Path) -> list[bytes]:
    return (run / METRICS_FILE).read_bytes().splitlines(keepends=True)


def test_a_torn_last_line_is_dropped_only_when_the_caller_recovers(run: Path, tmp_path: Path) -> None:
    lines = _metrics_lines(run)
    damaged = tmp_path / METRICS_FILE
    damaged.write_bytes(b"".join(lines) + lines[-1][:40])  # a fourth line cut short, no newline
    warnings: list[str] = []
    assert read_metrics(damaged, on_torn_line=warnings.append) == read_metrics(run / METRICS_FILE)
    assert warnings == [f"{damaged}:4: dropped a torn last line (an unfinished write)"]
    with pytest.raises(RecordError, match=rf"^{re.escape(str(damaged))}:4: not a metrics record$"):
        read_metrics(damaged)  # a report gets no say: the file is not what the run wrote


def test_a_complete_last_line_without_its_newline_is_kept(run: Path, tmp_path: Path) -> None:
    file = tmp_path / METRICS_FILE
    file.write_bytes((run / METRICS_FILE).read_bytes().rstrip(b"\n"))
    assert read_metrics(file, on_torn_line=pytest.fail) == read_metrics(run / METRICS_FILE)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda lines: [lines[0], b"garbage\n", *lines[2:]], r":2: not a metrics record$"),
        (lambda lines: [lines[0], lines[1][:30] + b"\n", *lines[2:]], r":2: not a metrics record$"),
        (lambda lines: [lines[0], b"[1, 2]\n", *lines[2:]], r":2: not a metrics record$"),
        (lambda lines: [lines[0], b'{"epoch": "2"}\n', *lines[2:]], r":2: not a metrics record$"),
        (lambda lines: [lines[0], b"\xff\xfe\n", *lines[2:]], r":2: not a metrics record$"),
        (lambda lines: [*lines, lines[1]], r":4: epoch 2 after epoch 3$"),
        (lambda lines: [lines[1], lines[0], lines[2]], r":2: epoch 1 after epoch 2$"),
    ],
)
def test_a_damaged_line_before_the_last_is_an_error_naming_file_and_line(
    run: Path, tmp_path: Path, damage: Any, message: str
) -> None:
    file = tmp_path / METRICS_FILE
    file.write_bytes(b"".join(damage(_metrics_lines(run))))
    with pytest.raises(RecordError, match="^" + re.escape(str(file)) + message):
        read_metrics(file, on_torn_line=pytest.fail)


def test_blank_lines_and_a_missing_file_hold_no_records(run: Path, tmp_path: Path) -> None:
    assert read_metrics(tmp_path / METRICS_FILE) == []
    file = tmp_path / METRICS_FILE
    file.write_bytes(b"\n".join(line.rstrip(b"\n") for line in _metrics_lines(run)) + b"\n\n  \n")
    assert read_metrics(file) == read_metrics(run / METRICS_FILE)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"status": "done"}', r"status 'done' is not one of completed, diverged, interrupted$"),
        (b'{"status": "missing"}', r"status 'missing' is not one of"),  # never written by a run
        (b"{}", r"status None is not one of"),
        (b"[]", r"a JSON list, not an object$"),
        (b'{"status": "compl', r"invalid JSON"),
    ],
)
def test_a_result_that_is_not_a_run_s_is_an_error_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    file = tmp_path / RESULT_FILE
    file.write_bytes(content)
    with pytest.raises(RecordError, match=f"^{re.escape(str(file))}: .*{message}"):
        read_result(file)
