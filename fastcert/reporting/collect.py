"""Read what the workflow produced: target manifests and the run directories they name.

Why a module of its own: tables, figures and the report all start from the same manifest
(``results/manifests/<target>.json``, written by the workflow) and the same run outputs
(``result.json``, ``metrics.jsonl``; schema in docs/architecture.md "Run outputs"). Reading them in
one place means a run that is missing, diverged or interrupted is classified the same way everywhere,
and a malformed file fails with a message naming the file and the key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastcert.io import read_jsonl

STATUSES = ("completed", "diverged", "interrupted", "missing")


@dataclass(frozen=True)
class Run:
    """One training run as listed in a manifest, with its outputs (``result`` None when missing)."""

    key: dict[str, Any]
    repeat: int
    run_dir: Path
    status: str
    result: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        """Only completed runs contribute numbers; the others are reported, never averaged."""
        return self.status == "completed"


@dataclass(frozen=True)
class Manifest:
    """The runs behind one target (a table or a figure) and the scale they were trained at."""

    target: str
    scale: str
    runs: list[Run]
    scale_description: str | None = None
    not_run: list[dict[str, Any]] = field(default_factory=list)  # row keys declared but not run at this scale

    @property
    def scale_text(self) -> str:
        """``smoke (tiny subsets, ...)``: the scale's name with the workflow's description of it."""
        return f"{self.scale} ({self.scale_description})" if self.scale_description else self.scale


def _require(mapping: dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise ValueError(f"{where}: missing key {key!r}")
    return mapping[key]


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file, naming the file in the error."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON ({err})") from err


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Per-epoch records of ``metrics.jsonl`` in epoch order; a missing file gives no records.

    A resumed run can log an epoch twice; the later record wins, as it describes the weights that
    were kept.
    """
    try:
        records = read_jsonl(path)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON line ({err})") from err
    by_epoch = {int(_require(record, "epoch", f"{path}: record {index}")): record
                for index, record in enumerate(records)}
    return [by_epoch[epoch] for epoch in sorted(by_epoch)]


def load_run(key: dict[str, Any], repeat: int, run_dir: Path) -> Run:
    """Classify one run directory by its ``result.json`` (absent → ``missing``)."""
    result_path = run_dir / "result.json"
    if not result_path.exists():
        return Run(key, repeat, run_dir, "missing")
    result = read_json(result_path)
    status = _require(result, "status", str(result_path))
    if status not in STATUSES[:3]:
        raise ValueError(f"{result_path}: status {status!r} is not one of {STATUSES[:3]}")
    return Run(key, repeat, run_dir, status, result, read_metrics(run_dir / "metrics.jsonl"))


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
        runs.append(load_run(key, int(entry.get("repeat", 0)), run_dir if run_dir.is_absolute() else base / run_dir))
    not_run = data.get("not_run", [])
    if not all(isinstance(key, dict) for key in not_run):
        raise ValueError(f"{path}: 'not_run' must be a list of row-key mappings")
    return Manifest(str(_require(data, "target", str(path))), str(_require(data, "scale", str(path))), runs,
                    data.get("scale_description"), not_run)


def data_description(runs: list[Run]) -> str:
    """Which data produced these runs, for captions: real data, synthetic stand-in, or a mix."""
    sources = set()
    for run in runs:
        data = (run.result or {}).get("data")
        if not isinstance(data, dict):
            continue
        kind = "synthetic stand-in data" if data.get("synthetic") else "real data"
        source = data.get("source")
        sources.add(f"{kind} ({source})" if source and source != "synthetic" else kind)
    if not sources:
        return "no completed runs"
    return "; ".join(sorted(sources))
