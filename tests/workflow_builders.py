"""Private copies of the workflow, the snakemake CLI run in them and a PATH without a given program,
shared by the workflow tests (test_workflow_dag, test_workflow_smoke, test_pipeline_tools, test_slurm,
test_pdflatex_rule)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PATHS = ("Snakefile", "workflow", "config")


def copy_workflow(destination: Path, *extra: str) -> Path:
    """A private copy of the workflow and its config (and the ``extra`` paths of the repository, e.g.
    the ``slurm`` profile), so runs and .snakemake stay out of the repo."""
    destination.mkdir(parents=True, exist_ok=True)
    for name in (*WORKFLOW_PATHS, *extra):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, destination / name)
    return destination


def snakemake(workdir: Path, *args: str, hang_guard_s: float = 1200) -> subprocess.CompletedProcess[str]:
    """Run the snakemake CLI in ``workdir``; stdout and stderr together in ``.stdout``.

    ``hang_guard_s`` only stops a hung run: it is several times the time a job needs on a loaded
    2-core machine, not a performance check (benchmarks and README measure speed).
    """
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=hang_guard_s,
    )


def path_without(program: str, bin_dir: Path) -> str:
    """A PATH of one folder linking every program on the current PATH except ``program``."""
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not Path(folder).is_dir():
            continue
        for entry in Path(folder).iterdir():
            link = bin_dir / entry.name
            if entry.name != program and not link.exists() and os.access(entry, os.X_OK):
                link.symlink_to(entry)
    return str(bin_dir)


# config/experiments.yaml as read, and the paper scale as the scales schema fills it: the engine's inputs
EXPERIMENTS = yaml.safe_load((REPO / "config" / "experiments.yaml").read_text())
PAPER = {
    "description": "paper",
    "max_repeats": None,
    "threads": 4,
    "width": 1.0,
    "schedule_factor": 1.0,
    "time_factor": 1.0,
    "spec": {},
    "datasets": {},
}
