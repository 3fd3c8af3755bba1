"""Where a campaign stands (``fastcert status``): per table and figure, its runs completed, training,
failed, diverged and not started; the epoch and time left of each run in training; GPU-hours spent
against the plan.

Why here and torch-free: it reads only the manifests (``results/<scale>/manifests``), each run
directory's ``result.json``, ``metrics.jsonl`` and run lock, and the plan (``plan.tsv``), so it answers
in well under a second for the paper's 226 runs while they train. A run is *training* while some
process holds its run lock (:func:`fastcert.locks.is_locked`), whatever files it has; else its
``result.json`` says completed or diverged; a run with an interrupted result, or with epochs recorded
but no result (killed), or an unreadable result, has *failed* (rerunning resumes it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from fastcert.locks import is_locked
from fastcert.pipeline.scales import scale_root
from fastcert.records import (
    METRICS_FILE,
    RESULT_FILE,
    RUN_LOCK_FILE,
    RecordError,
    Status,
    read_metrics,
    read_result,
)

BAR_WIDTH = 24


class State(StrEnum):
    COMPLETED = "completed"
    TRAINING = "training"
    FAILED = "failed"
    DIVERGED = "diverged"
    NOT_STARTED = "not started"


@dataclass(frozen=True)
class RunState:
    """One run directory now: its state, epochs done of ``epochs``, device seconds spent, seconds left."""

    run_dir: str
    state: State
    epochs_done: int
    epochs: int
    seconds_spent: float
    seconds_left: float | None  # training runs: remaining epochs x their mean epoch time so far


def run_state(run_dir: Path, epochs: int) -> RunState:
    """The state of one run directory (see the module docstring)."""
    training = is_locked(run_dir / RUN_LOCK_FILE)
    result = None
    if not training and (run_dir / RESULT_FILE).exists():
        try:
            result = read_result(run_dir / RESULT_FILE)
        except (RecordError, OSError):
            result = None
    if result is not None and result["status"] in (Status.COMPLETED, Status.DIVERGED):
        state = State.COMPLETED if result["status"] == Status.COMPLETED else State.DIVERGED
        done = result.get("epochs_completed", epochs if state == State.COMPLETED else 0)
        return RunState(str(run_dir), state, done, epochs, float(result.get("total_time") or 0.0), None)
    try:
        records = read_metrics(run_dir / METRICS_FILE, on_torn_line=lambda _: None)
    except (RecordError, OSError):
        records = []
    spent = sum(float(record.get("epoch_time") or 0.0) for record in records)
    done = records[-1]["epoch"] if records else 0
    if training:
        left = (epochs - done) * spent / done if done else None
        return RunState(str(run_dir), State.TRAINING, done, epochs, spent, left)
    started = records or (run_dir / RESULT_FILE).exists()
    return RunState(str(run_dir), State.FAILED if started else State.NOT_STARTED, done, epochs, spent, None)


@dataclass(frozen=True)
class TargetStatus:
    target: str
    runs: list[RunState]
    planned_hours: float | None

    def count(self, state: State) -> int:
        return sum(run.state == state for run in self.runs)

    @property
    def hours_spent(self) -> float:
        return sum(run.seconds_spent for run in self.runs) / 3600


def _planned_hours(plan: Path) -> dict[str, float]:
    """Per-target device-hours of the plan file (results[/<scale>]/plan.tsv); none if it is missing."""
    if not plan.exists():
        return {}
    rows = [line.split("\t") for line in plan.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    if not rows:
        return {}
    column = rows[0].index("device_hours")
    return {row[0]: float(row[column]) for row in rows[1:]}


def campaign(scale: str, root: Path = Path(".")) -> list[TargetStatus]:
    """Every target of the scale's manifests, and an ``all`` entry with each distinct run once."""
    results = root / scale_root("results", scale)
    manifests = sorted((results / "manifests").glob("*.json"))
    if not manifests:
        raise FileNotFoundError(
            f"{results / 'manifests'}: no manifests; write them with `snakemake --cores 1 --config scale={scale} "
            f"{results / 'plan.tsv'}`"
        )
    planned = _planned_hours(results / "plan.tsv")
    states: dict[str, RunState] = {}
    targets = []
    for path in manifests:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        runs = []
        for entry in manifest["runs"]:
            run_dir = entry["run_dir"]
            if run_dir not in states:
                states[run_dir] = run_state(root / run_dir, entry["spec"]["schedule"]["epochs"])
            runs.append(states[run_dir])
        unique = list({run.run_dir: run for run in runs}.values())
        targets.append(TargetStatus(manifest["target"], unique, planned.get(manifest["target"])))
    targets.sort(key=lambda t: [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", t.target)])
    targets.append(TargetStatus("all", list(states.values()), planned.get("all")))
    return targets


def _bar(target: TargetStatus) -> str:
    """Completed (#), training (>), failed (!), diverged (x), not started (.) in proportion, as the counts."""
    total = len(target.runs)
    if not total:
        return "[" + " " * BAR_WIDTH + "]"
    marks = ""
    for state, mark in (
        (State.COMPLETED, "#"),
        (State.TRAINING, ">"),
        (State.FAILED, "!"),
        (State.DIVERGED, "x"),
    ):
        marks += mark * round(BAR_WIDTH * target.count(state) / total)
    return "[" + marks[:BAR_WIDTH].ljust(BAR_WIDTH, ".") + "]"


def _hours(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds / 3600:.1f} h"


def render(scale: str, targets: Iterable[TargetStatus]) -> str:
    """The terminal report: a line per target with its bar and counts, one line naming the targets
    without training runs at this scale (e.g. all but Table 1 at the demo scale), then the runs in
    training."""
    targets = list(targets)
    trained = [target for target in targets if target.runs]
    width = max(len(t.target) for t in trained or targets)
    lines = [f"campaign at scale {scale!r}: runs completed / training / failed / diverged / not started"]
    for target in trained:
        counts = " / ".join(str(target.count(state)) for state in State)
        planned = "no plan" if target.planned_hours is None else f"{target.planned_hours:.2f}"
        lines.append(
            f"{target.target:<{width}}  {_bar(target)}  {len(target.runs):>3} runs: {counts:<22}"
            f"  device-hours {target.hours_spent:.2f} of {planned}"
        )
    untrained = [target.target for target in targets if not target.runs]
    if untrained:
        lines.append(f"no training runs at this scale: {', '.join(untrained)}")
    everything = targets[-1]
    training = sorted((run for run in everything.runs if run.state == State.TRAINING), key=lambda r: r.run_dir)
    if training:
        lines.append("training:")
        for run in training:
            lines.append(f"  {run.run_dir}: epoch {run.epochs_done}/{run.epochs}, {_hours(run.seconds_left)} left")
    return "\n".join(lines) + "\n"
