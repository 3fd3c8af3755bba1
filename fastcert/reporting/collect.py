"""Read what the workflow produced: target manifests, the run directories they name, and the
producers' documents (numbers computed without training, ``results/producers/<name>.json``).

Why a module of its own: tables, figures and the report all start from the same manifest
(``results/manifests/<target>.json``, written by the workflow) and the same run outputs
(``result.json``, ``metrics.jsonl``, read by :mod:`fastcert.records`, which owns their format). Reading them in
one place means a run that is missing, diverged or interrupted is classified the same way everywhere,
and a malformed file fails with a message naming the file and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastcert.datasets import DATASETS
from fastcert.io import read_json
from fastcert.phases import phase_counts
from fastcert.records import METRICS_FILE, RESULT_FILE, MetricsRecord, Result, Status, read_metrics, read_result
from fastcert.reporting.latex import escape


@dataclass(frozen=True)
class Run:
    """One training run as listed in a manifest, with its outputs (``result`` None when missing)."""

    key: dict[str, Any]
    repeat: int
    run_dir: Path
    status: Status
    result: Result | None = None
    metrics: list[MetricsRecord] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)  # the resolved run spec at this scale
    paper_schedule: dict[str, Any] | None = None  # the same row's schedule at the paper's scale

    @property
    def usable(self) -> bool:
        """Only completed runs contribute numbers; the others are reported, never averaged."""
        return self.status == Status.COMPLETED

    @property
    def phases(self) -> tuple[int, int, int] | None:
        """Epochs (ε = 0, ramp, ε = target) this run trains at its scale; None if its spec lacks them."""
        return schedule_phases(self.spec.get("schedule"))

    @property
    def paper_phases(self) -> tuple[int, int, int] | None:
        """The paper's epochs for the same row (from the manifest), None if the manifest lacks them."""
        return schedule_phases(self.paper_schedule)


def schedule_phases(schedule: dict[str, Any] | None) -> tuple[int, int, int] | None:
    """(ε = 0, ramp, ε = target) epoch counts of a run spec's ``schedule`` (start, length, epochs)."""
    if not isinstance(schedule, dict) or not {"start", "length", "epochs"} <= set(schedule):
        return None
    return phase_counts(int(schedule["start"]), int(schedule["length"]), int(schedule["epochs"]))


@dataclass(frozen=True)
class Manifest:
    """The runs behind one target (a table or a figure) and the scale they were trained at."""

    target: str
    scale: str
    runs: list[Run]
    scale_description: str | None = None
    scale_note: str | None = None  # what the scale's numbers can and cannot say (config/scales.yaml)
    not_run: list[dict[str, Any]] = field(default_factory=list)  # row keys declared but not run here
    # settings of this target where the pipeline's default is not the paper's text (config/experiments.yaml
    # `differences`): {"name", "setting", "variant": whether this run chose the other setting}
    differences: list[dict[str, Any]] = field(default_factory=list)

    def differences_text(self) -> str:
        """One sentence for a caption pointing to the report's section on these settings ('' if none)."""
        if not self.differences:
            return ""
        named = "; ".join(
            f"{escape(d['setting'])} ({'variant' if d['variant'] else 'default'} \\texttt{{{escape(d['name'])}}})"
            for d in self.differences
        )
        return f"Settings that differ from the paper's text (report, ``Settings that differ from the paper''): {named}."

    @property
    def scale_text(self) -> str:
        """``smoke (tiny subsets, ...)``: the scale's name with the workflow's description of it."""
        return f"{self.scale} ({self.scale_description})" if self.scale_description else self.scale


@dataclass(frozen=True)
class Producer:
    """A producer's document: rows of numbers computed without data or training, and how."""

    name: str
    function: str
    parameters: dict[str, Any]
    rows: list[dict[str, Any]]  # each {"key": {...}, "values": {name: number or None}}
    targets: tuple[str, ...] = ()  # the tables and figures that show these numbers

    @property
    def settings_text(self) -> str:
        """The scalar parameters, ``trials 100, seed 0``, for captions (lists and mappings left out)."""
        return ", ".join(
            f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
            for name, value in self.parameters.items()
            if isinstance(value, (int, float, str)) and not isinstance(value, bool)
        )


def _require(mapping: dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise ValueError(f"{where}: missing key {key!r}")
    return mapping[key]


def shown(value: float, source: dict[str, Any]) -> float:
    """``value`` as tables and figures show it: a stored fraction in % where ``source`` (a table
    metric's source, a figure panel) says ``percent: true``, any other value as stored."""
    return value * 100.0 if source.get("percent") else value


def load_run(key: dict[str, Any], repeat: int, run_dir: Path) -> Run:
    """Classify one run directory by its ``result.json`` (absent → ``missing``)."""
    result_path = run_dir / RESULT_FILE
    if not result_path.exists():
        return Run(key, repeat, run_dir, Status.MISSING)
    result = read_result(result_path)
    return Run(key, repeat, run_dir, result["status"], result, read_metrics(run_dir / METRICS_FILE))


def load_manifest(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Manifest:
    """Load a target manifest; relative ``run_dir`` entries are resolved against ``root`` (default cwd)."""
    path = Path(path)
    data = read_json(path)
    base = Path(root) if root is not None else Path.cwd()
    runs = []
    for index, entry in enumerate(_require(data, "runs", str(path))):
        where = f"{path}: runs[{index}]"
        key = _require(entry, "key", where)
        if not isinstance(key, dict):
            raise ValueError(f"{where}: 'key' must be a mapping, got {type(key).__name__}")
        run_dir = Path(_require(entry, "run_dir", where))
        run = load_run(key, int(entry.get("repeat", 0)), run_dir if run_dir.is_absolute() else base / run_dir)
        runs.append(replace(run, spec=entry.get("spec") or {}, paper_schedule=entry.get("paper_schedule")))
    not_run = data.get("not_run") or []
    for index, key in enumerate(not_run):
        if not isinstance(key, dict):
            raise ValueError(f"{path}: not_run[{index}] must be a row-key mapping, got {type(key).__name__}")
    return Manifest(
        str(_require(data, "target", str(path))),
        str(_require(data, "scale", str(path))),
        runs,
        data.get("scale_description"),
        data.get("scale_note"),
        not_run,
        data.get("differences") or [],
    )


def load_producer(path: str | os.PathLike) -> Producer:
    """Read a producer's document (``results/producers/<name>.json``, fastcert.method.analysis.produce)."""
    data = read_json(path)
    rows = _require(data, "rows", str(path))
    for index, row in enumerate(rows):
        for name in ("key", "values"):
            if not isinstance(_require(row, name, f"{path}: rows[{index}]"), dict):
                raise ValueError(f"{path}: rows[{index}]: {name!r} must be a mapping")
    return Producer(
        str(_require(data, "producer", str(path))),
        str(_require(data, "function", str(path))),
        dict(_require(data, "parameters", str(path))),
        rows,
        tuple(_require(data, "for", str(path))),
    )


def _dataset_text(data: Mapping[str, Any]) -> str:
    """``real MNIST (128 training / 64 test images)`` or ``synthetic CIFAR-10 stand-in (...)``."""
    name = data.get("name")
    display = DATASETS[name].display if name in DATASETS else str(name or "unknown dataset")
    text = f"synthetic {display} stand-in" if data.get("synthetic") else f"real {display}"
    sizes = [f"{data[key]} {what}" for key, what in (("n_train", "training"), ("n_test", "test")) if key in data]
    return f"{text} ({' / '.join(sizes)} images)" if sizes else text


def data_description(runs: list[Run]) -> str:
    """Which data produced these runs, per dataset, for captions: ``real MNIST (...); synthetic ...``."""
    texts = {_dataset_text(data) for run in runs if run.result and isinstance(data := run.result.get("data"), dict)}
    return "; ".join(sorted(texts)) if texts else "no completed runs"
