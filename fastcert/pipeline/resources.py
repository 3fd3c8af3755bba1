"""What a run costs: wall time on the reference GPU and host memory, from its spec.

The guide is the paper's Table 7 per-epoch times (seconds per epoch at ε = 0, on the ramp and at the
target ε on one RTX 2080 Ti), scaled by the fraction of the training set, width² and the scale's
time factor (e.g. a CPU is slower).
"""

from __future__ import annotations

import math
from typing import Any

from fastcert.pipeline.scales import dataset_transform, phase_counts
from fastcert.run.data.catalog import DATASETS
from fastcert.run.spec import RunSpec


def data_fraction(spec: RunSpec) -> float:
    """Fraction of the full training set a run uses."""
    return min(1.0, (spec.data.train_size or math.inf) / DATASETS[spec.dataset].n_train)


def estimated_seconds(spec: RunSpec, scale: dict[str, Any], train: dict[str, Any]) -> float:
    """Expected wall time of one run on the reference GPU, scaled to the run's size and scale.

    ``train`` is the workflow config's ``train`` section (``epoch_seconds``, ``gpu_speedup``).
    """
    guide = train["epoch_seconds"][spec.dataset][spec.model][spec.method]
    schedule = spec.schedule
    counts = phase_counts(schedule.start, schedule.length, schedule.epochs)
    seconds = sum(n * t for n, t in zip(counts, guide)) * data_fraction(spec) * spec.width**2
    return seconds * dataset_transform(scale, spec.dataset)["time_factor"] / train["gpu_speedup"]


def runtime_minutes(spec: RunSpec, scale: dict[str, Any], train: dict[str, Any], attempt: int) -> int:
    """Requested runtime: the estimate with a margin, longer on every retry, never below the floor."""
    minutes = estimated_seconds(spec, scale, train) / 60 * train["margin"]
    return math.ceil(max(train["min_runtime"], minutes) * attempt)


def memory_mb(spec: RunSpec, train: dict[str, Any]) -> int:
    """Host memory: a base plus the dataset held in memory, scaled by the fraction of it used."""
    memory = train["mem_mb"]
    return math.ceil(memory["base"] + memory[spec.dataset] * data_fraction(spec))
