"""The records of a run directory (``runs/<run id>/``): file names, statuses, phases, the shapes of
``result.json`` and of a ``metrics.jsonl`` line, and the one reader of each.

Why one module, without torch: :mod:`fastcert.run.lifecycle` writes these files, and the workflow
(rule inputs and outputs, at parse time), the reports and the benchmarks read them. With the names,
the values and the reading in one place, a writer and a reader cannot disagree about a status, a
phase or what a damaged file is. The values are ``str`` enums, so the JSON is plain strings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, TypedDict, cast

from fastcert.io import read_json

SPEC_FILE = "spec.json"  # the resolved spec and its hash, written by the run
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
LAST_CHECKPOINT = "checkpoint_last.pt"
BEST_CHECKPOINT = "checkpoint_best.pt"
RUN_LOCK_FILE = "run.lock"  # held by the one process writing the directory (fastcert.locks); not a record
RUN_FILES = (SPEC_FILE, METRICS_FILE, RESULT_FILE, LAST_CHECKPOINT, BEST_CHECKPOINT)  # what a run writes
REQUESTED_SPEC_FILE = "spec.yaml"  # the spec the workflow hands to `fastcert train --spec`
CHECKPOINTS = ("best", "last")  # the checkpoints a run keeps, also the keys of its result.json
# the checkpoint whose errors tables and the report show by default (the authors' choice); the config schema's
# tables.checkpoint default, which a test keeps equal to it
DEFAULT_CHECKPOINT = "best"


class Status(StrEnum):
    """How a run stopped (``result.json`` ``status``); ``MISSING`` is never written: it is what the
    readers call a run directory without a ``result.json``."""

    COMPLETED = "completed"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"
    MISSING = "missing"


RESULT_STATUSES = (Status.COMPLETED, Status.DIVERGED, Status.INTERRUPTED)  # what result.json may hold


class Phase(StrEnum):
    """The part of the ε schedule an epoch is in (a metrics line's ``phase``, ``result.json``'s
    ``epoch_time`` keys): every batch at ε = 0, on the ramp, every batch at the target ε."""

    EPS0 = "eps0"
    RAMP = "ramp"
    TARGET = "target"


class MetricsRecord(TypedDict):
    """One line of ``metrics.jsonl``: one completed epoch (docs/architecture.md "Run outputs" lists
    the keys of ``train`` and ``test``; a NaN/inf metric is null there and named in ``nonfinite``)."""

    epoch: int
    phase: Phase
    eps: float
    eval_eps: float
    lr: float
    epoch_time: float
    resumed: bool
    train: dict[str, Any]
    test: dict[str, Any]
    nonfinite: list[str]


class EpochSummary(TypedDict):
    """``result.json``'s ``best`` and ``last``: an epoch's test errors (fractions)."""

    epoch: int
    standard_err: float | None
    verified_err: float | None


class DivergedDetail(TypedDict):
    epoch: int
    reason: str


class InterruptedDetail(TypedDict):
    signal: str  # its name, e.g. SIGTERM
    completed_epochs: int


class DataDetail(TypedDict):
    name: str
    source: str
    synthetic: bool
    n_train: int
    n_test: int


class PrecisionDetail(TypedDict):
    training: str  # fastcert.method.precision.label
    certification: str
    nvidia_tf32_override: str | None  # NVIDIA's libraries apply it over fastcert's settings


class GpuDetail(TypedDict):
    """The GPU slots a local job held (fastcert.run.placement): which GPU, how many of its slots, and
    the most runs (this one included) that held slots of it at once, seen at the start and every epoch."""

    index: int
    slots: int
    slots_per_gpu: int
    runs_sharing: int


class Provenance(TypedDict):
    fastcert_version: str
    git_commit: str | None
    python: str
    torch: str
    cuda: str | None
    device: str
    spec_hash: str
    seed: int
    gpu: GpuDetail | None  # None: not placed by fastcert (CPU, a chosen cuda:N, SLURM, CUDA_VISIBLE_DEVICES)


class Result(TypedDict):
    """``result.json``, written once the run stops (keys in this order)."""

    status: Status
    epochs_completed: int
    best: EpochSummary | None  # the epoch at ε_target with the lowest test verified error
    last: EpochSummary | None
    epoch_time: dict[str, float | None]  # mean seconds per epoch of each Phase (None: no such epoch)
    total_time: float
    diverged: DivergedDetail | None
    interrupted: InterruptedDetail | None
    data: DataDetail | None  # None: stopped before the data loaded
    precision: PrecisionDetail
    provenance: Provenance
    spec: dict[str, Any]


class RecordError(ValueError):
    """A run record that is not what its writer writes; the message starts with the file (and line)."""


def epoch_summary(record: Mapping[str, Any]) -> EpochSummary:
    """The ``best``/``last`` entry of ``result.json`` for a metrics record (its test errors)."""
    return {
        "epoch": record["epoch"],
        "standard_err": record["test"]["err"],
        "verified_err": record["test"]["verified_err"],
    }


def split_metrics(record: MetricsRecord, split: str) -> dict[str, Any]:
    """``record[split]`` for a split named as data (a table layout's or a figure panel's ``split``);
    a record without it gives no metrics."""
    if split == "train":
        return record.get("train") or {}
    if split == "test":
        return record.get("test") or {}
    raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")


def _holds_a_record(value: Any) -> bool:
    """Whether a parsed line has what every reader takes from a record (an epoch, its phase and time,
    the test errors): a bit flipped in a key, or a hand edit, must be a damaged line, not a KeyError."""
    return (
        isinstance(value, dict)
        and type(value.get("epoch")) is int
        and value.get("phase") in tuple(Phase)
        and type(value.get("epoch_time")) in (int, float)
        and isinstance(value.get("test"), dict)
        and all(key in value["test"] for key in ("err", "verified_err"))
    )


def read_metrics(
    path: str | os.PathLike[str], *, on_torn_line: Callable[[str], None] | None = None
) -> list[MetricsRecord]:
    """The records of ``metrics.jsonl`` in file order (a missing file has none).

    Every line must be a JSON object with an integer ``epoch`` above the line before it, a ``phase``,
    an ``epoch_time`` and the ``test`` errors; else
    :class:`RecordError` names the file and line. The exception, when ``on_torn_line`` is given: a
    last line without its newline that is not a record (a write that did not finish) is dropped and
    ``on_torn_line`` gets the warning, so a resumed run can go on from its checkpoint. The run's own
    writes replace the file atomically and never leave one; a report, which gets none, refuses it.
    """
    file = Path(path)
    if not file.exists():
        return []
    lines = file.read_bytes().split(b"\n")
    records: list[MetricsRecord] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            record = None
        if not _holds_a_record(record):
            if number == len(lines) and on_torn_line is not None:  # no newline after it: unfinished
                on_torn_line(f"{file}:{number}: dropped a torn last line (an unfinished write)")
                continue
            raise RecordError(f"{file}:{number}: not a metrics record")
        if records and record["epoch"] <= records[-1]["epoch"]:
            raise RecordError(f"{file}:{number}: epoch {record['epoch']} after epoch {records[-1]['epoch']}")
        records.append(cast(MetricsRecord, record))
    return records


def read_result(path: str | os.PathLike[str]) -> Result:
    """``result.json``: a JSON object whose ``status`` is one a run writes (as a :class:`Status`);
    anything else is a :class:`RecordError` naming the file (an unreadable file: the OSError).
    Other keys are checked by the reader that needs them."""
    try:
        value = read_json(path)
    except ValueError as error:  # names the file
        raise RecordError(str(error)) from None
    if not isinstance(value, dict):
        raise RecordError(f"{path}: a JSON {type(value).__name__}, not an object")
    status = value.get("status")
    if status not in RESULT_STATUSES:
        raise RecordError(f"{path}: status {status!r} is not one of {', '.join(RESULT_STATUSES)}")
    return cast(Result, {**value, "status": Status(status)})


def unverifiable(run_dir: str | os.PathLike[str]) -> str | None:
    """Why the run in ``run_dir`` has no model to verify, as what follows "the run" in a one-line message
    ("diverged in epoch 1 (non-finite training loss (nan))"); None when it completed with a best checkpoint.

    Why here: ``fastcert verify`` (asked for a checkpoint the run did not leave) and the workflow (which
    does not verify such a run and has the verification table say why) must give the same reason. A
    diverged run counts even where it kept a best checkpoint of an earlier epoch: the tables report no
    number of a diverged run. A damaged ``result.json`` is a :class:`RecordError`."""
    directory = Path(run_dir)
    if not (directory / RESULT_FILE).is_file():
        return f"has not finished (no {RESULT_FILE})"
    result = read_result(directory / RESULT_FILE)
    if result["status"] == Status.DIVERGED:
        diverged = result.get("diverged")
        return "diverged" if diverged is None else f"diverged in epoch {diverged['epoch']} ({diverged['reason']})"
    if result["status"] == Status.INTERRUPTED:
        return f"was interrupted after {result['epochs_completed']} epoch(s) (rerun fastcert train to resume it)"
    if not (directory / BEST_CHECKPOINT).is_file():
        return "completed without a best checkpoint"
    return None
