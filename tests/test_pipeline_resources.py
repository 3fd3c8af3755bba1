"""Runtime and memory estimates of fastcert.pipeline.resources, called directly (no Snakemake)."""

from __future__ import annotations

import math
from itertools import product
from pathlib import Path
from typing import Any

import pytest
import yaml

from fastcert.datasets import DATASETS
from fastcert.methods import TRAINING_METHODS
from fastcert.pipeline.resources import (
    data_fraction,
    epoch_time_guide,
    estimated_seconds,
    memory_mb,
    runtime_minutes,
)
from fastcert.run.spec import validate as validate_spec
from fastcert.vocabulary import MODELS

REPO = Path(__file__).resolve().parents[1]

GUIDE = {("cifar10", "cnn7", "vanilla"): (30.0, 54.8, 54.8), ("cifar10", "cnn7", "crown-ibp"): (30.0, 78.5, 54.8)}
TRAIN = {
    "margin": 1.5,
    "min_runtime": 10,
    "gpu_speedup": 1.0,
    "mem_mb": {"base": 4000, "mnist": 1000, "cifar10": 2000, "tinyimagenet": 8000},
}
SCALE = {"width": 1.0, "schedule_factor": 1.0, "time_factor": 1.0, "spec": {}, "datasets": {}}


def cifar_spec(**overrides: Any):
    raw = {
        "dataset": "cifar10",
        "model": "cnn7",
        "method": "crown-ibp",
        "eps_train": 8 / 255,
        "eps_test": 8 / 255,
        "batch_size": 128,
        "lr": 5e-4,
        "seed": 100,
        "init": "default",
        "regularizers": [],
        "schedule": {"start": 2, "length": 80, "epochs": 160, "milestones": [120, 140]},
        **overrides,
    }
    return validate_spec(raw)


def test_estimate_sums_the_guides_phase_times() -> None:
    # 1 epoch at eps 0, 80 on the ramp, 79 at the target: the paper's CROWN-IBP CIFAR-10 CNN-7 run
    assert estimated_seconds(cifar_spec(), SCALE, TRAIN, GUIDE) == pytest.approx(30.0 + 80 * 78.5 + 79 * 54.8)


def test_estimate_scales_with_data_fraction_width_squared_time_factor_and_gpu_speed() -> None:
    full = estimated_seconds(cifar_spec(), SCALE, TRAIN, GUIDE)
    small = cifar_spec(width=0.5, data={"train_size": 5000})
    slow_cpu = {**SCALE, "datasets": {"cifar10": {"time_factor": 80.0}}}
    fast_gpu = {**TRAIN, "gpu_speedup": 2.0}
    assert data_fraction(small) == 0.1
    assert estimated_seconds(small, slow_cpu, fast_gpu, GUIDE) == pytest.approx(full * 0.1 * 0.25 * 80 / 2)


def test_runtime_has_a_margin_a_floor_and_grows_with_the_attempt() -> None:
    minutes = estimated_seconds(cifar_spec(), SCALE, TRAIN, GUIDE) / 60 * 1.5
    assert runtime_minutes(cifar_spec(), SCALE, TRAIN, GUIDE, 1) == math.ceil(minutes)
    assert runtime_minutes(cifar_spec(), SCALE, TRAIN, GUIDE, 2) == math.ceil(2 * minutes)
    tiny = cifar_spec(width=0.01, batch_size=8, data={"train_size": 10})
    assert runtime_minutes(tiny, SCALE, TRAIN, GUIDE, 1) == 10 and runtime_minutes(tiny, SCALE, TRAIN, GUIDE, 3) == 30


def test_memory_is_a_base_plus_the_used_fraction_of_the_dataset() -> None:
    assert memory_mb(cifar_spec(), TRAIN) == 6000
    assert memory_mb(cifar_spec(data={"train_size": 5000}), TRAIN) == 4200


def test_the_guide_is_the_papers_table7_for_every_dataset_model_and_method() -> None:
    table7 = yaml.safe_load((REPO / "config" / "paper_results.yaml").read_text())["tables"]["table7"]
    levels = yaml.safe_load((REPO / "config" / "experiments.yaml").read_text())["levels"]
    guide = epoch_time_guide(table7, levels)
    assert set(guide) == set(product(DATASETS, MODELS, TRAINING_METHODS))
    assert guide[("cifar10", "cnn7", "crown-ibp")] == (30.0, 78.5, 54.8)
    assert guide[("mnist", "resnext", "ours")] == (104.4, 104.4, 73.2)  # no eps = 0 epoch: the ramp's time
