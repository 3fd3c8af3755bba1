"""How long the report page takes to build at the paper scale from its inputs (issue 20: at most 2 s).

Writes the paper scale's manifests (config/experiments.yaml, config/scales.yaml) into a temporary
folder, a completed run directory for each of its runs (result.json and a metrics.jsonl record per
epoch of the run's full schedule: the files the page reads), the producers' documents, the figures'
PNGs and a plan; then builds ``report.html`` ``--repeats`` times and prints the median, min and max
seconds of the build alone (reading manifests, runs and figures, building every table, writing the page),
as wall-clock time and as the process's CPU time (what it takes on an idle core; a shared machine's
wall clock includes time other processes took).

    python benchmarks/bench_report.py            # paper scale, 5 builds
    python benchmarks/bench_report.py --scale smoke
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fastcert.io import load_yaml
from fastcert.pipeline.config import choose_scale, load_checked
from fastcert.pipeline.experiments import expand_targets, manifest_document
from fastcert.records import METRICS_FILE, RESULT_FILE, Phase, Status
from fastcert.reporting.collect import load_manifest, load_producer, schedule_phases
from fastcert.reporting.figures import FIGURES, draw, save
from fastcert.reporting.report import build_html_report

REPO = Path(__file__).resolve().parents[1]
SPLIT = {"err": 0.3, "verified_err": 0.6, "active": 0.2, "inactive": 0.7, "unstable": 0.1, "l_tightness": 0.5}


def _write_run(run_dir: Path, spec: dict[str, Any], index: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    eps0, ramp, target = schedule_phases(spec["schedule"]) or (1, 1, 1)
    phases = [Phase.EPS0] * eps0 + [Phase.RAMP] * ramp + [Phase.TARGET] * target
    records = [
        {"epoch": e, "phase": p, "epoch_time": 11.0, "train": SPLIT, "test": {**SPLIT, "log_tightness_ratio": 3.0}}
        for e, p in enumerate(phases, start=1)
    ]
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    errors = {"epoch": len(phases), "standard_err": 0.2 + index % 7 / 100, "verified_err": 0.6 + index % 5 / 100}
    result = {
        "status": Status.COMPLETED,
        "best": errors,
        "last": errors,
        "epoch_time": {Phase.EPS0: 10.0, Phase.RAMP: 12.0, Phase.TARGET: 11.0},
        "total_time": 1000.0,
        "data": {"name": spec["dataset"], "source": "auto", "synthetic": False, "n_train": 50000, "n_test": 10000},
    }
    (run_dir / RESULT_FILE).write_text(json.dumps(result), encoding="utf-8")


def _producers(root: Path) -> list[Path]:
    gains = [
        {"key": {"init": init, "n": n}, "values": {"closed_form": 1.0, "gain": 1.0}}
        for init in ("Xavier (uniform)", "Xavier (Gaussian)", "Kaiming (uniform)", "Kaiming (Gaussian)")
        for n in (27, 576, 1152, 32768)
    ]
    widths = [{"key": {"init": "IBP", "layer": layer}, "values": {"width": 1.0 + layer}} for layer in range(7)]
    paths = []
    for name, target, rows in (("table5_gains", "table5", gains), ("figure1_widths", "figure1", widths)):
        path = root / "results" / "producers" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {"producer": name, "for": [target], "function": "benchmark", "parameters": {}, "rows": rows}
        path.write_text(json.dumps(document), encoding="utf-8")
        paths.append(path)
    return paths


def inputs(root: Path, scale_name: str) -> dict[str, Any]:
    """Everything the page reads at ``scale_name``, written under ``root``."""
    experiments_path = str(REPO / "config" / "experiments.yaml")
    experiments = load_checked(experiments_path, REPO / "workflow" / "schemas" / "experiments.schema.yaml")
    scales = load_checked(str(REPO / "config" / "scales.yaml"), REPO / "workflow" / "schemas" / "scales.schema.yaml")
    scale = choose_scale(scales, scale_name, "config/scales.yaml")
    expansion = expand_targets(experiments, scale, scale_name, experiments_path)
    manifests = []
    for target in expansion.manifests:
        path = root / "results" / "manifests" / f"{target}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest_document(expansion, target, scale_name, scale)), encoding="utf-8")
        manifests.append(path)
    for index, (rid, spec) in enumerate(sorted(expansion.runs.items())):
        _write_run(root / "runs" / rid, spec.to_dict(), index)
    producers = _producers(root)
    figures = []
    for name in FIGURES:
        path = root / "results" / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest = load_manifest(root / "results" / "manifests" / f"{name}.json", root)
        documents = [load_producer(p) for p in producers if p.stem.startswith(name)]
        save(draw(name, manifest, documents), {"png": str(path)})
        figures.append(path)
    plan = root / "results" / "plan.tsv"
    plan.write_text(f"# plan at scale {scale_name!r}\ntarget\truns\nall\t{len(expansion.runs)}\n", encoding="utf-8")
    return {
        "figures": figures,
        "manifests": manifests,
        "producers": producers,
        "plan": plan,
        "scales": load_yaml((REPO / "config" / "scales.yaml").read_text(encoding="utf-8")),
        "runs": len(expansion.runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="paper")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fastcert-bench-html-") as tmp:
        root = Path(tmp)
        given = inputs(root, args.scale)
        runs = given.pop("runs")
        seconds, cpu = [], []
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            build_html_report(
                **given, paper_path=REPO / "config" / "paper_results.yaml", output=root / "report.html", root=root
            )
            seconds.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        size = (root / "report.html").stat().st_size
    print(
        f"report.html at scale {args.scale} ({runs} runs, {len(given['manifests'])} manifests, {size / 1e6:.1f} MB): "
        f"wall median {statistics.median(seconds):.2f} s (min {min(seconds):.2f}, max {max(seconds):.2f}); "
        f"CPU median {statistics.median(cpu):.2f} s (min {min(cpu):.2f}: the time on an idle core) "
        f"over {args.repeats} builds"
    )


if __name__ == "__main__":
    main()
