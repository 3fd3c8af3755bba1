"""The ε schedule against auto_LiRPA's formula, the authors' reported values, and its edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from fastcert.method.schedule import (
    SmoothedSchedule,
    batches_per_epoch,
    reg_lambda,
    regularizer_active,
)
from fastcert.phases import phase_counts, ramp_end
from fastcert.run.spec import ScheduleSpec

CIFAR = dict(eps_max=8 / 255, start=2, length=80, batches_per_epoch=391)
MNIST = dict(eps_max=0.4, start=1, length=20, batches_per_epoch=235)


def formula_eps(step: int, eps_max: float, start: int, length: int, n: int) -> float:
    """SmoothedScheduler transcribed literally (auto_LiRPA's arithmetic, mid=0.25, β=4)."""
    mid, beta = 0.25, 4.0
    i0, i1 = (start - 1) * n, (start + length - 1) * n
    im = int((i1 - i0) * mid) + i0
    t = (im - i0) ** (beta - 1.0)
    a = eps_max / ((i1 - im) * beta * t + (im - i0) * t)
    v = 0.0 + a * (im - i0) ** beta
    is_ramp, is_linear = float(step > i0), float(step >= im)
    exp_value = 0.0 + a * float(step - i0) ** beta
    linear_value = min(v + (eps_max - v) * (step - im) / (i1 - im), eps_max)
    return is_ramp * ((1.0 - is_linear) * exp_value + is_linear * linear_value) + (1.0 - is_ramp) * 0.0


def all_eps(schedule: SmoothedSchedule, epochs: int) -> np.ndarray:
    return np.array([schedule.eps(s) for s in range(epochs * schedule.batches_per_epoch)])


@pytest.mark.parametrize("config, epochs", [(CIFAR, 160), (MNIST, 70)])
def test_matches_formula_bit_for_bit(config: dict, epochs: int) -> None:
    schedule = SmoothedSchedule(**config)
    n = config["batches_per_epoch"]
    args = (config["eps_max"], config["start"], config["length"], n)
    for step in range(epochs * n):
        assert schedule.eps(step) == formula_eps(step, *args), step


@pytest.mark.parametrize("config", [CIFAR, MNIST])
def test_mid_point_value_and_smooth_monotone_ramp(config: dict) -> None:
    schedule = SmoothedSchedule(**config)
    eps_max = config["eps_max"]
    assert schedule.eps(schedule.mid_step) == pytest.approx(eps_max / 13, rel=1e-12)
    values = all_eps(schedule, config["start"] + config["length"] + 1)
    steps = np.diff(values)
    assert (steps >= 0).all()
    # Continuity with matched slopes: no increment exceeds the linear part's slope.
    linear_slope = (eps_max - eps_max / 13) / (schedule.final_step - schedule.mid_step)
    assert steps.max() <= linear_slope * (1 + 1e-9)
    im = schedule.mid_step
    assert steps[im - 2] == pytest.approx(linear_slope, rel=5e-3)  # the curve's last step
    assert steps[im] == pytest.approx(linear_slope, rel=1e-9)


def test_cifar_values_from_the_authors_notes() -> None:
    schedule = SmoothedSchedule(**CIFAR)
    eps_max, n = CIFAR["eps_max"], 391
    assert schedule.epoch_eps(1) == 0.0
    assert schedule.eps(391) == 0.0  # first batch of epoch 2
    assert schedule.eps(392) > 0.0
    assert schedule.epoch_eps(2) == pytest.approx(1.5e-8, rel=1e-2)
    assert schedule.epoch_eps(10) == pytest.approx(9.9e-5, rel=1e-2)
    assert schedule.epoch_eps(21) / eps_max == pytest.approx(0.07692, rel=1e-3)
    assert schedule.epoch_eps(40) / eps_max == pytest.approx(0.369, rel=1e-3)
    assert 0.9999 * eps_max < schedule.epoch_eps(81) < eps_max
    target = all_eps(schedule, 160)[81 * n :]
    assert (target == eps_max).all()  # from the first batch of epoch 82 on
    assert [schedule.phase(e) for e in (1, 2, 81, 82, 160)] == ["eps0", "ramp", "ramp", "target", "target"]


def test_mnist_values() -> None:
    schedule = SmoothedSchedule(**MNIST)
    eps_max = MNIST["eps_max"]
    values = all_eps(schedule, 21)
    assert values[0] == 0.0 and (values[1:] > 0).all()  # only the very first batch is clean
    assert schedule.epoch_eps(20) / eps_max == pytest.approx(0.9997, abs=1e-4)
    assert schedule.epoch_eps(20) < eps_max
    assert schedule.eps(20 * 235) == eps_max
    assert [schedule.phase(e) for e in (1, 20, 21, 70)] == ["ramp", "ramp", "target", "target"]


def test_epoch_eps_is_last_batch_of_the_epoch() -> None:
    schedule = SmoothedSchedule(eps_max=0.1, start=2, length=3, batches_per_epoch=7)
    for epoch in range(1, 7):
        assert schedule.epoch_eps(epoch) == schedule.eps(epoch * 7 - 1)


def test_ramp_end_is_exactly_eps_max_where_the_formula_rounds_below() -> None:
    # For this configuration the literal formula lands one ulp below ε_max at the ramp's end.
    schedule = SmoothedSchedule(eps_max=0.4, start=1, length=20, batches_per_epoch=391)
    end = schedule.final_step
    assert formula_eps(end, 0.4, 1, 20, 391) == np.nextafter(0.4, 0)
    assert schedule.eps(end) == 0.4
    assert schedule.eps(end - 1) == formula_eps(end - 1, 0.4, 1, 20, 391) < 0.4


def test_short_ramp_without_power_part_is_linear_from_zero() -> None:
    # 2 batches of ramp: int(2 * 0.25) = 0, so the power part is empty (auto_LiRPA divides by 0).
    schedule = SmoothedSchedule(eps_max=0.3, start=1, length=2, batches_per_epoch=1)
    assert [schedule.eps(s) for s in range(4)] == [0.0, 0.15, 0.3, 0.3]
    assert [schedule.phase(e) for e in (1, 2, 3)] == ["ramp", "ramp", "target"]


def test_zero_eps_max() -> None:
    schedule = SmoothedSchedule(eps_max=0.0, start=2, length=3, batches_per_epoch=5)
    assert all(schedule.eps(s) == 0.0 for s in range(40))
    assert [schedule.phase(e) for e in (1, 2, 4, 5)] == ["eps0", "ramp", "ramp", "target"]
    assert reg_lambda(0.0, 0.0, 0.5) == 0.5


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(start=0), "start"),
        (dict(length=0), "length"),
        (dict(batches_per_epoch=0), "batches_per_epoch"),
        (dict(start=1.5), "start"),
        (dict(eps_max=-0.1), "eps_max"),
        (dict(eps_max=float("nan")), "eps_max"),
        (dict(mid=1.0), "mid"),
        (dict(beta=1.0), "beta"),
    ],
)
def test_invalid_arguments(kwargs: dict, word: str) -> None:
    with pytest.raises(ValueError, match=word):
        SmoothedSchedule(**{**CIFAR, **kwargs})


def test_invalid_step_and_epoch() -> None:
    schedule = SmoothedSchedule(**CIFAR)
    with pytest.raises(ValueError, match="step"):
        schedule.eps(-1)
    with pytest.raises(ValueError, match="step"):
        schedule.eps(2.0)
    with pytest.raises(ValueError, match="epoch"):
        schedule.phase(0)
    with pytest.raises(ValueError, match="epoch"):
        schedule.epoch_eps(0)


def test_numpy_integers_are_accepted() -> None:
    schedule = SmoothedSchedule(eps_max=0.1, start=np.int64(2), length=3, batches_per_epoch=np.int32(4))
    assert schedule.eps(np.int64(20)) == 0.1


def test_reg_lambda() -> None:
    assert reg_lambda(0.0, 0.4, 0.5) == 0.5
    assert reg_lambda(0.1, 0.4, 0.5) == pytest.approx(0.375)
    assert reg_lambda(0.4, 0.4, 0.5) == 0.0
    assert reg_lambda(0.1, 0.4, 0.5, constant=True) == 0.5


def test_regularizer_active_through_the_end_of_the_ramp() -> None:
    assert [regularizer_active(e, 2, 80) for e in (1, 81, 82)] == [True, True, False]
    assert [regularizer_active(e, 1, 20) for e in (1, 20, 21)] == [True, True, False]


@pytest.mark.parametrize(("start", "length"), [(2, 80), (1, 20), (3, 1)])
def test_the_ramp_ends_in_one_epoch_for_the_spec_the_phases_and_the_regularizers(start: int, length: int) -> None:
    epochs = range(1, start + length + 3)
    schedule = SmoothedSchedule(0.4, start, length, batches_per_epoch=3)
    last_ramp = max(e for e in epochs if schedule.phase(e) == "ramp")
    last_active = max(e for e in epochs if regularizer_active(e, start, length))
    spec_end = ScheduleSpec(start=start, length=length, epochs=start + length + 2, milestones=()).ramp_end
    assert last_ramp == last_active == spec_end == ramp_end(start, length) == start + length - 1
    assert schedule.eps(ramp_end(start, length) * 3 - 1) < 0.4 == schedule.epoch_eps(ramp_end(start, length) + 1)
    phases = [schedule.phase(e) for e in epochs]
    assert phase_counts(start, length, len(epochs)) == tuple(phases.count(p) for p in ("eps0", "ramp", "target"))


def test_batches_per_epoch() -> None:
    assert batches_per_epoch(50_000, 128) == 391
    assert batches_per_epoch(60_000, 256) == 235
    assert batches_per_epoch(100_000, 128) == 782
    assert batches_per_epoch(256, 128) == 2
    with pytest.raises(ValueError, match="batch_size"):
        batches_per_epoch(100, 0)
    with pytest.raises(ValueError, match="n_train"):
        batches_per_epoch(0, 10)
