"""Run directories and manifests for the table/figure/report tests, written by hand in the documented
schema (docs/architecture.md "Run outputs"; manifests as workflow/rules/common.smk writes them), so
that the expected numbers are known exactly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastcert.records import METRICS_FILE, RESULT_FILE

SYNTHETIC = {"name": "cifar10", "source": "synthetic", "synthetic": True, "n_train": 128, "n_test": 64}


def epoch_record(epoch: int, phase: str, **train: float) -> dict[str, Any]:
    """One metrics.jsonl record; ``train`` overrides the train-split values (test mirrors train)."""
    split = {
        "ce": 1.0,
        "err": 0.5,
        "robust_loss": 2.0,
        "verified_err": 0.8,
        "loss": 2.0,
        "l_tightness": 0.5,
        "l_relu": 0.2,
        "l_std": 0.0,
        "reg": 0.7,
        "active": 0.2,
        "inactive": 0.7,
        "unstable": 0.1,
        "log_tightness_ratio": 5.0,
        **train,
    }
    return {
        "epoch": epoch,
        "phase": phase,
        "eps": 0.0,
        "lr": 5e-4,
        "epoch_time": 1.0,
        "resumed": False,
        "train": {**split, "grad_norm": 1.0},
        "test": dict(split),
    }


def write_run(
    run_dir: Path,
    *,
    status: str = "completed",
    standard: float = 0.5,
    verified: float = 0.7,
    last: tuple[float, float] | None = None,
    epoch_time: dict[str, float | None] | None = None,
    total_time: float = 100.0,
    data: dict[str, Any] | None = None,
    metrics: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``result.json`` (errors as fractions) and ``metrics.jsonl`` into ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    last_std, last_ver = last if last is not None else (standard, verified)
    result = {
        "status": status,
        "best": {"epoch": 3, "standard_err": standard, "verified_err": verified},
        "last": {"epoch": 4, "standard_err": last_std, "verified_err": last_ver},
        "epoch_time": epoch_time or {"eps0": 1.0, "ramp": 2.0, "target": 1.5},
        "total_time": total_time,
        "diverged": {"epoch": 2, "reason": "non-finite loss"} if status == "diverged" else None,
        "data": data or SYNTHETIC,
    }
    (run_dir / RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")
    records = (
        metrics
        if metrics is not None
        else [epoch_record(e, p) for e, p in enumerate(["eps0", "ramp", "ramp", "target"], start=1)]
    )
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return run_dir


def schedule(phases: tuple[int, int, int]) -> dict[str, Any]:
    """A run spec's ``schedule`` for (ε = 0, ramp, ε = target) epoch counts."""
    eps0, ramp, target = phases
    return {"start": eps0 + 1, "length": ramp, "epochs": eps0 + ramp + target, "milestones": []}


def write_manifest(
    path: Path,
    target: str,
    entries: list[tuple[dict[str, Any], str]],
    scale: str = "smoke",
    *,
    phases: tuple[int, int, int] | None = None,
    paper_phases: tuple[int, int, int] | None = None,
    scale_note: str | None = None,
    not_run: list[dict[str, Any]] | None = None,
    differences: list[dict[str, Any]] | None = None,
) -> Path:
    """A manifest listing ``(key, run_dir)`` entries (run_dir relative to the workflow root), repeats numbered.

    ``phases`` / ``paper_phases``: every run's schedule at this scale and the paper's; ``not_run``: row
    keys declared but not run at this scale."""
    counts: dict[str, int] = {}
    runs = []
    for key, run_dir in entries:
        repeat = counts.get(json.dumps(key, sort_keys=True), 0)
        counts[json.dumps(key, sort_keys=True)] = repeat + 1
        entry = {
            "key": key,
            "repeat": repeat,
            "run_dir": run_dir,
            "spec": {"schedule": schedule(phases)} if phases else {},
        }
        if paper_phases:
            entry["paper_schedule"] = schedule(paper_phases)
        runs.append(entry)
    document: dict[str, Any] = {"target": target, "scale": scale, "scale_description": "a test scale", "runs": runs}
    if scale_note:
        document["scale_note"] = scale_note
    if not_run:
        document["not_run"] = list(not_run)
    if differences:
        document["differences"] = list(differences)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def write_producer(path: Path, name: str, targets: list[str], rows: list[dict[str, Any]], **parameters: Any) -> Path:
    """A producer's document (as fastcert.method.analysis.produce writes it), made by hand."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps({"producer": name, "for": targets, "function": "by_hand", "parameters": parameters, "rows": rows}),
        encoding="utf-8",
    )
    return path


# A tiny real run whose learning rate makes its first step's loss non-finite (as tests/test_run.py's
# huge-lr run): it diverges in epoch 1 and leaves result.json and metrics, but no checkpoint.
DIVERGING_SPEC = {
    "dataset": "mnist",
    "data": {"source": "synthetic", "train_size": 96, "test_size": 48},
    "model": "cnn7",
    "width": 0.0625,
    "method": "ours",
    "lr": 1e30,
    "schedule": {"start": 1, "length": 1, "epochs": 2, "milestones": []},
    "eps_train": 0.05,
    "eps_test": 0.05,
    "batch_size": 16,
    "seed": 7,
    "device": "cpu",
}


def train_diverged(run_dir: Path) -> Path:
    """``fastcert train`` of :data:`DIVERGING_SPEC` into ``run_dir`` (exit status 3: diverged)."""
    from fastcert.run.cli import main
    from fastcert.run.exits import EXIT_DIVERGED

    run_dir.parent.mkdir(parents=True, exist_ok=True)
    spec = run_dir.parent / f"{run_dir.name}.yaml"
    spec.write_text(json.dumps(DIVERGING_SPEC), encoding="utf-8")
    assert main(["train", "--spec", str(spec), "--out", str(run_dir), "--no-progress"]) == EXIT_DIVERGED
    return run_dir
