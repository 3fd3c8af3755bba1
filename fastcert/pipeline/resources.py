"""What a run costs: wall time on the reference GPU and host memory, from its spec.

The guide is the paper's Table 7 per-epoch times (seconds per epoch at ε = 0, on the ramp and at the
target ε on one RTX 2080 Ti, read from config/paper_results.yaml), scaled by the fraction of the
training set, width² and the scale's time factor (e.g. a CPU is slower).
"""

from __future__ import annotations

import math
from typing import Any

from fastcert.datasets import DATASETS
from fastcert.phases import phase_counts
from fastcert.pipeline.scales import dataset_transform
from fastcert.run.spec import RunSpec

Guide = dict[tuple[str, str, str], tuple[float, float, float]]


def epoch_time_guide(table7: dict[str, Any], levels: dict[str, Any]) -> Guide:
    """Per-epoch seconds (ε = 0, ramp, target) by spec (dataset, model, method), from the paper's Table 7.

    ``table7`` is config/paper_results.yaml's ``tables.table7``, whose rows name datasets, models and
    methods as the paper prints them; ``levels`` (config/experiments.yaml) maps those names to spec
    values. MNIST has no ε = 0 epoch (printed as null): its ramp time stands in.
    """
    guide: Guide = {}
    for row in table7["rows"]:
        names = tuple(levels[axis][row[axis]]["spec"][axis] for axis in ("dataset", "model", "method"))
        ramp = row["epoch_time_eps_ramp"]
        eps0 = row["epoch_time_eps_0"] if row["epoch_time_eps_0"] is not None else ramp
        guide[names] = (eps0, ramp, row["epoch_time_eps_target"])
    return guide


def data_fraction(spec: RunSpec) -> float:
    """Fraction of the full training set a run uses."""
    return min(1.0, (spec.data.train_size or math.inf) / DATASETS[spec.dataset].n_train)


def estimated_seconds(spec: RunSpec, scale: dict[str, Any], train: dict[str, Any], guide: Guide) -> float:
    """Expected wall time of one run on the reference GPU, scaled to the run's size and scale.

    ``train`` is the workflow config's ``train`` section (``gpu_speedup``); ``guide`` the per-epoch
    times of :func:`epoch_time_guide`.
    """
    schedule = spec.schedule
    counts = phase_counts(schedule.start, schedule.length, schedule.epochs)
    per_epoch = guide[(spec.dataset, spec.model, spec.method)]
    seconds = sum(n * t for n, t in zip(counts, per_epoch)) * data_fraction(spec) * spec.width**2
    return seconds * dataset_transform(scale, spec.dataset)["time_factor"] / train["gpu_speedup"]


def runtime_minutes(spec: RunSpec, scale: dict[str, Any], train: dict[str, Any], guide: Guide, attempt: int) -> int:
    """Requested runtime: the estimate with a margin, longer on every retry, never below the floor."""
    minutes = estimated_seconds(spec, scale, train, guide) / 60 * train["margin"]
    return math.ceil(max(train["min_runtime"], minutes) * attempt)


def memory_mb(spec: RunSpec, train: dict[str, Any]) -> int:
    """Host memory: a base plus the dataset held in memory, scaled by the fraction of it used."""
    memory = train["mem_mb"]
    return math.ceil(memory["base"] + memory[spec.dataset] * data_fraction(spec))
