"""Training configurations for the tests of the training loop, built as a run builds them: from a
validated run spec, so that a test and a run cannot disagree on a default (RunSpec holds them)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastcert.run.spec import validate
from fastcert.run.training import TrainConfig


def train_config(**overrides: Any) -> TrainConfig:
    """The configuration of the default Vanilla IBP spec (IBP objective, no regularizers, no lr
    milestones) with ``overrides`` (TrainConfig field names)."""
    spec = validate({"method": "vanilla", "schedule": {"milestones": []}})
    return dataclasses.replace(TrainConfig.from_spec(spec), **overrides)
