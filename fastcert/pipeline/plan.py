"""What a scale will cost, before anyone launches 200 jobs: per target the runs it needs, how many
of them it shares with other targets (trained once for all), and the estimated device-hours (GPU-hours
at paper scale; CPU-core-hours at the CPU scales, from the scale's time_factor).

Written by the workflow's `plan` rule (`snakemake --cores 1 results/plan.tsv`, `results/<scale>/plan.tsv`
at a scale other than paper, through workflow/scripts/plan.py); it reads only the manifests (no training
needed) and the per-run estimates the workflow computed from each run spec (fastcert.pipeline.resources).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from fastcert.io import atomic_write_text, read_json
from fastcert.pipeline.makespan import makespan

COLUMNS = ("target", "runs", "own", "shared", "device_hours")


@dataclass(frozen=True)
class Workstation:
    """The machines the plan gives wall-clock hours for: each count of ``gpus`` (``train.plan_gpus``), GPUs
    of ``slots_per_gpu`` slots, and the slots each run needs (fastcert.pipeline.resources.slot_need)."""

    gpus: tuple[int, ...]
    slots_per_gpu: int
    slots: dict[str, int]

    def columns(self) -> list[str]:
        return [f"hours_on_{n}_gpu{'s' if n > 1 else ''}" for n in self.gpus]

    def hours(self, runs: set[str], hours: dict[str, float]) -> dict[str, float]:
        """Wall-clock hours of ``runs`` alone on each machine (fastcert.pipeline.makespan)."""
        jobs = [(hours[run], self.slots[run]) for run in runs]
        return {column: makespan(jobs, n, self.slots_per_gpu) for column, n in zip(self.columns(), self.gpus)}


def load_runs(paths: list[str]) -> dict[str, set[str]]:
    """Distinct run directories per target, read from the manifests."""
    runs = {}
    for path in paths:
        manifest = read_json(path)
        runs[manifest["target"]] = {entry["run_dir"] for entry in manifest["runs"]}
    return runs


def plan_rows(runs: dict[str, set[str]], hours: dict[str, float], machines: Workstation) -> list[dict[str, Any]]:
    """One row per target plus an `all` row counting every distinct run once.

    `own` runs are needed by this target only; `shared` ones by other targets too, so the per-target
    hours add up to more than the `all` row. The wall-clock columns schedule a target's runs alone.
    """
    users = Counter(run for target_runs in runs.values() for run in target_runs)
    rows = []
    for target, target_runs in runs.items():
        own = sum(1 for run in target_runs if users[run] == 1)
        rows.append(
            {
                "target": target,
                "runs": len(target_runs),
                "own": own,
                "shared": len(target_runs) - own,
                "device_hours": sum(hours[run] for run in target_runs),
                **machines.hours(target_runs, hours),
            }
        )
    every = set(users)
    rows.append(
        {
            "target": "all",
            "runs": len(every),
            "own": len(every),
            "shared": 0,
            "device_hours": sum(hours[run] for run in every),
            **machines.hours(every, hours),
        }
    )
    return rows


def header(scale: str, description: str, machines: Workstation) -> list[str]:
    """Comment lines that say what the numbers are, so the file can be read on its own."""
    return [
        f"# plan at scale {scale!r}: {description}",
        "# runs: distinct runs the target needs; own: runs only this target needs; shared: runs other targets",
        "#   need too (trained once for all, so the targets' rows add up to more than the `all` row)",
        "# device_hours: estimated hours on one device: the paper's per-epoch GPU times (Table 7, RTX 2080 Ti)",
        "#   scaled to each run's data, width and epochs, x the scale's time_factor, / train.gpu_speedup;",
        "#   GPU-hours at the paper's GPU speed at the paper scale, CPU-core-hours at the CPU scales",
        f"# hours_on_N_gpu(s): wall hours of the target's runs alone on N GPUs x {machines.slots_per_gpu} slot(s)",
        "#   (train.plan_gpus, train.slots_per_gpu): longest run first, each on the GPU where the slots its memory",
        "#   estimate needs are free soonest (fastcert.pipeline.makespan); packed runs keep their solo speed",
    ]


def render(rows: list[dict[str, Any]], scale: str, description: str, machines: Workstation) -> str:
    """Comment header, then a tab-separated table, hours with two decimals."""
    columns = [*COLUMNS, *machines.columns()]
    lines = [*header(scale, description, machines), "\t".join(columns)]
    for row in rows:
        lines.append("\t".join(str(row[c]) if c in COLUMNS[:4] else f"{row[c]:.2f}" for c in columns))
    return "\n".join(lines) + "\n"


def write_plan(
    manifests: list[str],
    device_hours: dict[str, float],
    machines: Workstation,
    scale: str,
    description: str,
    output: str,
) -> str:
    """Write the plan file (results/plan.tsv at the paper scale) atomically; returns its text."""
    text = render(plan_rows(load_runs(manifests), device_hours, machines), scale, description, machines)
    atomic_write_text(output, text)
    return text
