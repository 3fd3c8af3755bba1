"""A scale's whole report input tree without training: the manifests the pipeline writes at that scale
(config/experiments.yaml, config/scales.yaml), a made-up run directory for every run they name and
hand-written producer documents. The numbers are a fixed function of each run id, so the same scale
always gives the same tables (the LaTeX before/after comparison relies on it); every seventh run
diverged, so that tables and the report show such runs as they do after a real run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from run_builders import epoch_record, write_producer, write_run

from fastcert.pipeline.config import choose_scale, load_checked
from fastcert.pipeline.experiments import expand_targets, manifest_document
from fastcert.reporting.collect import schedule_phases
from fastcert.reporting.tables import load_paper

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"
SCHEMAS = REPO / "workflow" / "schemas"
PAPER_PATH = CONFIG / "paper_results.yaml"


def _fraction(rid: str, salt: str) -> float:
    """A number in [0, 1) fixed by the run id (and ``salt``, one per value)."""
    digest = hashlib.sha256(f"{rid}/{salt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def _metrics(rid: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    phases = schedule_phases(spec.get("schedule")) or (1, 1, 1)
    names = ["eps0"] * phases[0] + ["ramp"] * phases[1] + ["target"] * phases[2]
    shares = {name: 0.05 + 0.3 * _fraction(rid, name) for name in ("active", "unstable")}
    return [
        epoch_record(
            epoch,
            phase,
            active=shares["active"] * (1 + 0.1 * epoch),
            unstable=shares["unstable"] / epoch,
            inactive=1 - shares["active"] - shares["unstable"] / epoch,
            l_tightness=1.0 / epoch,
            l_relu=0.5 + 0.1 * epoch,
            verified_err=0.9 - 0.05 * epoch * _fraction(rid, "slope"),
            log_tightness_ratio=2.0 + 4 * _fraction(rid, f"ratio{epoch}"),
        )
        for epoch, phase in enumerate(names, start=1)
    ]


def _data(spec: dict[str, Any]) -> dict[str, Any]:
    data = spec.get("data", {})
    source = data.get("source", "auto")
    return {
        "name": spec["dataset"],
        "source": source,
        "synthetic": source == "synthetic",
        "n_train": data.get("train_size", 0),
        "n_test": data.get("test_size", 0),
    }


def _producers(root: Path) -> list[Path]:
    paper = load_paper(PAPER_PATH)["tables"]["table5"]["rows"]
    gains = [
        {
            "key": {"init": row["method"], "n": n},
            "values": {
                "closed_form": None if row["method"] == "Orthogonal" else 0.5 * n**0.5,
                "gain": row[f"gain_n{n}"] * (1 + 0.06 * _fraction(row["method"], str(n))),
            },
        }
        for row in paper
        for n in (27, 576, 1152, 32768)
    ]
    widths = [
        {"key": {"init": init, "layer": layer}, "values": {"width": (1 + layer) ** (slope + 1)}}
        for slope, init in enumerate(("Xavier (uniform)", "IBP initialization"))
        for layer in range(7)
    ]
    out = root / "results" / "producers"
    return [
        write_producer(out / "table5_gains.json", "table5_gains", ["table5"], gains, trials=100, seed=0),
        write_producer(out / "figure1_widths.json", "figure1_widths", ["figure1"], widths, eps=8 / 255, seed=0),
    ]


def scale_tree(root: Path, scale_name: str, variants: tuple[str, ...] = ()) -> dict[str, Any]:
    """Write the manifests, runs and producer documents of ``scale_name`` under ``root``; return
    ``{"manifests": {target: path}, "producers": [paths], "paper": path}``."""
    experiments_path = str(CONFIG / "experiments.yaml")
    experiments = load_checked(experiments_path, SCHEMAS / "experiments.schema.yaml")
    scales = load_checked(str(CONFIG / "scales.yaml"), SCHEMAS / "scales.schema.yaml")
    scale = choose_scale(scales, scale_name, "config/scales.yaml")
    expansion = expand_targets(experiments, scale, scale_name, experiments_path, variants)
    manifests = {}
    for target in expansion.manifests:
        path = root / "results" / "manifests" / f"{target}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest_document(expansion, target, scale_name, scale)), encoding="utf-8")
        manifests[target] = path
    for index, (rid, spec) in enumerate(sorted(expansion.runs.items())):
        document = spec.to_dict()
        write_run(
            root / "runs" / rid,
            status="diverged" if index % 7 == 6 else "completed",
            standard=0.05 + 0.6 * _fraction(rid, "standard"),
            verified=0.2 + 0.7 * _fraction(rid, "verified"),
            epoch_time={phase: 1 + 10 * _fraction(rid, phase) for phase in ("eps0", "ramp", "target")},
            total_time=100 * (1 + _fraction(rid, "total")),
            data=_data(document),
            metrics=_metrics(rid, document),
        )
    return {"manifests": manifests, "producers": _producers(root), "paper": PAPER_PATH}
