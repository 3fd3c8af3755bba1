"""Scales: transformations of paper-scale run specs (config/scales.yaml).

A scale multiplies widths and epoch counts and sets run-spec keys (device, data subsets), per dataset
where it says so; the experiment grammar (:mod:`fastcert.pipeline.experiments`) applies it to every
spec it expands.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fastcert.phases import phase_counts


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` with ``update`` laid over it; nested mappings merge, everything else is replaced."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dataset_transform(scale: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The scale's settings for one dataset: its per-dataset entry over the scale-wide values."""
    own = scale["datasets"].get(dataset, {})
    return {
        "width": own.get("width", scale["width"]),
        "schedule_factor": own.get("schedule_factor", scale["schedule_factor"]),
        "time_factor": own.get("time_factor", scale["time_factor"]),
        "spec": deep_merge(scale["spec"], own.get("spec", {})),
    }


def squeeze_schedule(schedule: dict[str, Any], factor: float) -> dict[str, Any]:
    """Scale each ε phase's epoch count by ``factor``: a phase that exists keeps at least one epoch,
    the lr milestones keep their relative position."""
    if factor == 1:
        return schedule
    counts = phase_counts(schedule["start"], schedule["length"], schedule["epochs"])
    eps0, ramp, target = (math.ceil(n * factor) if n > 0 else 0 for n in counts)
    epochs = eps0 + ramp + target
    milestones = sorted({min(epochs, max(1, round(m * epochs / schedule["epochs"]))) for m in schedule["milestones"]})
    return {"start": eps0 + 1, "length": ramp, "epochs": epochs, "milestones": milestones}


def scale_spec(spec: dict[str, Any], scale: dict[str, Any]) -> dict[str, Any]:
    """Apply a scale to a complete paper-scale spec."""
    transform = dataset_transform(scale, spec["dataset"])
    scaled = dict(spec)
    scaled["width"] = spec["width"] * transform["width"]
    scaled["schedule"] = squeeze_schedule(spec["schedule"], transform["schedule_factor"])
    return deep_merge(scaled, transform["spec"])


PAPER_SCALE = "paper"


def scale_root(root: str, scale_name: str, variants: Sequence[str] = ()) -> str:
    """Where a scale's products go under ``root`` (``results``, ``reports``, ``logs``).

    The paper scale with the default settings keeps the documented paths (``results/table1.tex``);
    every other scale, and any choice of variants, has its own folder (``results/smoke/table1.tex``,
    ``results/smoke+figure6-bn/...``), so building or dry-running one never touches, or makes out of
    date, another's finished outputs. Run directories are shared: they are named by identity, and
    the same spec is the same run at any scale.
    """
    parts = ([] if scale_name == PAPER_SCALE else [scale_name]) + list(variants)
    return f"{root}/{'+'.join(parts)}" if parts else root
