"""Training configurations for the tests of the training loop, built as a run builds them: from a
validated run spec, so that a test and a run cannot disagree on a default (RunSpec holds them)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastcert.run.spec import validate
from fastcert.run.training import TrainConfig


def train_config(method: str = "vanilla", **overrides: Any) -> TrainConfig:
    """The configuration of the default spec of ``method`` (by default Vanilla IBP: IBP objective, no
    regularizers), without lr milestones, with ``overrides`` (TrainConfig field names)."""
    spec = validate({"method": method, "schedule": {"milestones": []}})
    return dataclasses.replace(TrainConfig.from_spec(spec), **overrides)
