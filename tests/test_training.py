"""The training loop (the paper's Sec. 3.4, App. C): ε per batch, natural batches, accumulation, regularizer wiring,
per-epoch evaluation and best epoch, divergence, interruption and bit-identical resume."""

from __future__ import annotations

import copy
import math
import os
import sys
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from train_configs import train_config

from fastcert.method.bounds import bound_pass
from fastcert.method.init import initialize
from fastcert.method.models import build
from fastcert.method.objectives import BatchBounds, ibp_objective, objective_for
from fastcert.method.perturbation import input_box
from fastcert.method.regularizers import log_tightness_ratio
from fastcert.method.schedule import SmoothedSchedule
from fastcert.methods import TRAINING_METHODS, training_method
from fastcert.run import training
from fastcert.run.data.loading import load_dataset
from fastcert.run.training import Diverged, Interrupted, Meter, TrainConfig, train
from fastcert.run.verify import verify

EPS = 0.05
TERMS = ("tightness", "relu")


@pytest.fixture(scope="module")
def data():
    return load_dataset("mnist", source="synthetic", train_size=64, test_size=48)


def tiny_model(seed: int = 0, init: str = "ibp") -> nn.Module:
    torch.manual_seed(seed)
    model = build("cnn7", "mnist", width=1 / 16)
    initialize(model, init, generator=torch.Generator().manual_seed(seed))
    return model


def config(method: str = "vanilla", **overrides: Any) -> TrainConfig:
    base = {
        "eps_train": EPS,
        "eps_test": EPS,
        "start": 2,
        "length": 2,
        "epochs": 4,
        "milestones": (3,),
        "batch_size": 16,
    }
    return train_config(method, **{**base, **overrides})


class Recorder:
    """An IBP objective that records what each call got (ε from the box, sizes, flags)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, model, x, y, x_lower, x_upper, *, num_classes, eps_fraction, training):
        self.calls.append(
            {
                "half_width": float((x_upper - x_lower).max()) / 2,
                "size": len(y),
                "eps_fraction": eps_fraction,
                "training": training,
            }
        )
        return ibp_objective(
            model, x, y, x_lower, x_upper, num_classes=num_classes, eps_fraction=eps_fraction, training=training
        )


def test_each_batch_gets_the_schedule_eps_and_natural_batches_skip_bounds(data) -> None:
    train_split, test_split, info = data
    recorder = Recorder()
    cfg = config(start=2, length=2, epochs=3)
    train(tiny_model(), train_split, test_split, info, cfg, objective=recorder)
    schedule = SmoothedSchedule(EPS, 2, 2, batches_per_epoch=4)
    train_calls = [c for c in recorder.calls if c["training"]]
    # Vanilla-style (no regularizers): ε = 0 batches are plain forwards, so only steps with ε > 0
    # reach the objective, in order, each at its own ε.
    expected = [schedule.eps(step) for step in range(12) if schedule.eps(step) > 0]
    assert [c["eps_fraction"] * EPS for c in train_calls] == pytest.approx(expected, rel=1e-12)
    assert [c["half_width"] for c in train_calls] == pytest.approx(expected, rel=1e-5)
    # The test pass runs once per epoch over all 48 examples, at the epoch's last training ε.
    test_calls = [c for c in recorder.calls if not c["training"]]
    assert sum(c["size"] for c in test_calls) == 3 * 48
    assert {c["eps_fraction"] for c in test_calls} == {schedule.epoch_eps(e) / EPS for e in (1, 2, 3)}


def test_natural_batches_get_tiny_bounds_when_regularizers_are_on(data) -> None:
    train_split, test_split, info = data
    recorder = Recorder()
    history = train(
        tiny_model(),
        train_split,
        test_split,
        info,
        config(epochs=2, regularizers=TERMS),
        objective=recorder,
    ).history
    first_epoch = [c for c in recorder.calls if c["training"]][:4]
    assert [c["half_width"] for c in first_epoch] == pytest.approx([training.NATURAL_BOUND_EPS] * 4, rel=0.05)
    # Epoch 1 is all ε = 0: the loss is clean CE plus λ0·reg (λ = λ0 at ε = 0).
    epoch1 = history[0]["train"]
    assert history[0]["phase"] == "eps0" and epoch1["reg"] is not None
    assert epoch1["loss"] == pytest.approx(epoch1["ce"] + 0.5 * epoch1["reg"], rel=1e-6)


def test_grad_accumulation_is_one_step_over_per_sub_batch_forwards(data) -> None:
    train_split, test_split, info = data
    cfg = config(start=2, length=1, epochs=2, batch_size=32, grad_accumulation=2)
    subset = train_split.subset(torch.arange(32))  # one loader batch = one optimizer step
    model = tiny_model()
    reference = copy.deepcopy(model)
    recorder = Recorder()
    train(
        model,
        subset,
        test_split,
        info,
        config(**{**cfg.__dict__, "epochs": 1}),
        generator=torch.Generator().manual_seed(3),
        objective=recorder,
    )
    assert not [c for c in recorder.calls if c["training"]]  # epoch 1 is natural: plain forwards

    # The same step by hand: each half its own forward (own BN statistics), loss / 2, one step.
    ((x, y),) = subset.batches(32, shuffle=True, augment=True, generator=torch.Generator().manual_seed(3))
    optimizer = torch.optim.Adam(reference.parameters(), lr=cfg.lr, weight_decay=0.0)
    reference.train()
    for xs, ys in zip(x.chunk(2), y.chunk(2)):
        (F.cross_entropy(reference(xs), ys) / 2).backward()
    nn.utils.clip_grad_norm_(reference.parameters(), max_norm=cfg.grad_clip)
    optimizer.step()
    for got, want in zip(model.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(got, want)


def test_sub_batches_of_one_example_are_refused_before_training(data) -> None:
    train_split, test_split, info = data
    odd = train_split.subset(torch.arange(33))  # last batch of 1 example
    with pytest.raises(ValueError, match="sub-batch of 1 example"):
        train(tiny_model(), odd, test_split, info, config())


def test_regularizers_are_added_with_lambda_of_the_batch_eps_only_in_warmup(data, monkeypatch) -> None:
    train_split, test_split, info = data
    calls: list[tuple[float, float, float, bool]] = []
    real = training.reg_lambda

    def spy(eps: float, eps_max: float, lambda0: float, constant: bool = False) -> float:
        calls.append((eps, eps_max, lambda0, constant))
        return real(eps, eps_max, lambda0, constant)

    monkeypatch.setattr(training, "reg_lambda", spy)
    cfg = config(start=1, length=2, epochs=3, regularizers=TERMS, lambda0=0.3)
    history = train(tiny_model(), train_split, test_split, info, cfg).history
    schedule = SmoothedSchedule(EPS, 1, 2, batches_per_epoch=4)
    # Per epoch of the warmup: 4 training batches at their own ε, then 3 test batches at the
    # epoch's frozen last ε; no calls once the warmup is over.
    expected = []
    for epoch in (1, 2):
        expected += [schedule.eps(step) for step in range(4 * (epoch - 1), 4 * epoch)]
        expected += [schedule.epoch_eps(epoch)] * 3
    assert [call[0] for call in calls] == expected
    assert all(call[1:] == (EPS, 0.3, False) for call in calls)
    # Warmup = epochs 1..2: regularizer logged and in the loss; epoch 3: neither.
    assert [r["train"]["reg"] is not None for r in history] == [True, True, False]
    assert [r["test"]["l_tightness"] is not None for r in history] == [True, True, False]


def test_constant_lambda_total_is_robust_loss_plus_lambda_reg(data) -> None:
    train_split, test_split, info = data
    cfg = config(start=1, length=2, epochs=2, regularizers=TERMS, lambda0=0.7, constant_lambda=True)
    epoch2 = train(tiny_model(), train_split, test_split, info, cfg).history[1]["train"]
    assert epoch2["loss"] == pytest.approx(epoch2["robust_loss"] + 0.7 * epoch2["reg"], rel=1e-6)


def test_vanilla_logs_regularizers_in_warmup_without_optimizing_them(data) -> None:
    train_split, test_split, info = data
    history = train(tiny_model(init="default"), train_split, test_split, info, config(epochs=3)).history
    first, third = history[0], history[2]  # epoch 2 starts with an ε = 0 batch; 3 is all robust
    assert first["train"]["robust_loss"] is None and first["train"]["l_relu"] is None  # no bounds
    assert first["test"]["verified_err"] is not None  # the test pass always bounds
    assert third["phase"] == "ramp" and third["train"]["reg"] is None
    assert third["train"]["l_tightness"] is not None and third["train"]["l_relu"] is not None
    assert third["train"]["loss"] == pytest.approx(third["train"]["robust_loss"], rel=1e-6)


def test_records_are_complete_and_evaluation_matches_verify(data) -> None:
    train_split, test_split, info = data
    model = tiny_model()
    result = train(model, train_split, test_split, info, config(regularizers=TERMS))
    assert [r["phase"] for r in result.history] == ["eps0", "ramp", "ramp", "target"]
    assert [r["lr"] for r in result.history] == pytest.approx([5e-4, 5e-4, 5e-4, 1e-4])
    last = result.history[-1]
    assert last["eps"] == last["eval_eps"] == EPS
    for split in ("train", "test"):
        metrics = last[split]
        for key in training.SCALAR_KEYS + ("active", "inactive", "unstable"):
            assert key in metrics
        layers = len(metrics["active_per_layer"])
        assert layers == 6 and len(metrics["unstable_per_layer"]) == layers
        assert metrics["active"] + metrics["inactive"] + metrics["unstable"] == pytest.approx(1.0)
    assert last["train"]["grad_norm"] > 0 and "grad_norm" not in last["test"]
    errors = verify(model, test_split, info, EPS, batch_size=16)
    assert errors["standard_err"] == last["test"]["err"]
    assert errors["verified_err"] == last["test"]["verified_err"]
    assert result.last == {
        "epoch": 4,
        "standard_err": last["test"]["err"],
        "verified_err": last["test"]["verified_err"],
    }


def test_best_epoch_is_the_lowest_verified_error_at_eps_max(data) -> None:
    train_split, test_split, info = data
    result = train(
        tiny_model(), train_split, test_split, info, config(start=1, length=1, epochs=4, milestones=(), lr=3e-3)
    )
    target = [r for r in result.history if r["phase"] == "target"]
    assert [r["epoch"] for r in target] == [2, 3, 4]
    best = min(target, key=lambda r: r["test"]["verified_err"])  # first of equal minima
    assert result.best == {
        "epoch": best["epoch"],
        "standard_err": best["test"]["err"],
        "verified_err": best["test"]["verified_err"],
    }


def test_a_non_finite_loss_raises_diverged_with_the_epoch(data) -> None:
    train_split, test_split, info = data
    seen = {"n": 0}

    def poisoned(model, x, y, x_lower, x_upper, **kwargs) -> BatchBounds:
        out = ibp_objective(model, x, y, x_lower, x_upper, **kwargs)
        seen["n"] += kwargs["training"]
        if seen["n"] > 6:
            return out._replace(robust_loss=out.robust_loss * math.nan)
        return out

    with pytest.raises(Diverged) as error:
        train(tiny_model(), train_split, test_split, info, config(start=1), objective=poisoned)
    # Step 0 (ε = 0) is a plain forward, so the 7th objective call is global step 7, in epoch 2.
    assert error.value.epoch == 2
    assert error.value.reason == "non-finite training loss at step 7 (nan)"


def test_non_finite_test_metrics_become_null_and_are_listed(data) -> None:
    train_split, test_split, info = data

    def overflowing_test(model, x, y, x_lower, x_upper, **kwargs) -> BatchBounds:
        out = ibp_objective(model, x, y, x_lower, x_upper, **kwargs)
        return out if kwargs["training"] else out._replace(robust_loss=out.robust_loss * math.inf)

    record = train(
        tiny_model(), train_split, test_split, info, config(start=1, length=1, epochs=2), objective=overflowing_test
    ).history[-1]
    assert record["test"]["robust_loss"] is None and record["test"]["loss"] is None
    assert record["nonfinite"] == ["test.robust_loss", "test.loss"]
    assert record["train"]["robust_loss"] is not None


# (method, config overrides) of the runs whose test pass logs Table 6's statistic: every training method,
# and Vanilla IBP at an ε below the 1e-6 floor of that statistic's bounds.
TIGHTNESS_RUNS = [pytest.param(method, {}, id=method) for method in TRAINING_METHODS] + [
    pytest.param("vanilla", {"eps_train": 1e-9, "eps_test": 1e-9}, id="vanilla, eps below 1e-6")
]


def _tightness_by_hand(model: nn.Module, split, info, eps: float) -> float:
    """Mean over 16-example test batches of log(Ê(Δm)/Ê(Δ0)) from eval-mode IBP at max(ε, 1e-6)."""
    model.eval()
    values = []
    with torch.no_grad():
        for x, _ in split.batches(16, shuffle=False, augment=False):
            lower, upper = input_box(x, max(eps, training.NATURAL_BOUND_EPS), info.mean, info.std)
            values.append(log_tightness_ratio(lower, upper, bound_pass(model, x, lower, upper).pre_activation))
    return sum(values) / len(values)


@pytest.mark.parametrize(("method", "overrides"), TIGHTNESS_RUNS)
def test_every_test_pass_logs_the_tightness_ratio_at_eps_at_least_1e_6(data, method, overrides) -> None:
    """Table 6: epoch 1 (ε = 0) included, for every method, from the end-of-epoch model's IBP bounds
    at max(ε, 1e-6) px (the authors' --min-eps-reg); the ramp epoch reuses the batch's own bounds."""
    train_split, test_split, info = data
    init = training_method(method).init
    run_config = config(method, epochs=2, **overrides)
    model = tiny_model(init=init)
    snapshots: list[dict[str, torch.Tensor]] = []
    history = train(
        model,
        train_split,
        test_split,
        info,
        run_config,
        on_epoch_end=lambda record, state, best: snapshots.append(copy.deepcopy(state["model"])),
    ).history
    assert history[0]["eval_eps"] == 0
    floor = training.NATURAL_BOUND_EPS
    assert (history[1]["eval_eps"] >= floor) == (run_config.eps_test >= floor)  # the ramp epoch: below it or not
    for record, weights in zip(history, snapshots):
        at_epoch_end = tiny_model(init=init)
        at_epoch_end.load_state_dict(weights)
        expected = _tightness_by_hand(at_epoch_end, test_split, info, record["eval_eps"])
        assert math.isfinite(expected)
        assert record["test"]["log_tightness_ratio"] == pytest.approx(expected, rel=1e-5)
    # natural training batches get bounds only for the regularizers
    assert (history[0]["train"]["log_tightness_ratio"] is None) == (not run_config.regularizers)


def test_the_tightness_pass_changes_nothing_else(data, monkeypatch) -> None:
    """The ε = 0 epoch's extra IBP pass (the same for every objective) only measures: the verified
    error, the train metrics, the next epoch's training, the weights and BN running stats are those
    of a run without it."""
    train_split, test_split, info = data

    def run() -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
        model = tiny_model(init="default")
        history = train(
            model, train_split, test_split, info, config(epochs=2), generator=torch.Generator().manual_seed(5)
        ).history
        return history, model.state_dict()

    with_stat, weights = run()
    monkeypatch.setattr(training, "_test_tightness_ratio", lambda *args: torch.zeros((), dtype=torch.float64))
    without_stat, weights_without = run()  # no extra pass: a constant stands in for the statistic
    assert with_stat[0]["test"]["log_tightness_ratio"] not in (None, 0.0)
    assert without_stat[0]["test"]["log_tightness_ratio"] == 0.0
    for got, want in zip(with_stat, without_stat):
        got, want = copy.deepcopy(got), copy.deepcopy(want)
        for record in (got, want):
            del record["epoch_time"], record["test"]["log_tightness_ratio"]
        assert got == want
    assert weights.keys() == weights_without.keys()
    assert all(torch.equal(weights[k], weights_without[k]) for k in weights)  # BN running stats included


def test_an_unknown_objective_is_refused(data) -> None:
    with pytest.raises(ValueError, match="unknown objective 'crown'; valid: ibp, crown-ibp"):
        train(tiny_model(), *data, config(objective="crown"))
    with pytest.raises(ValueError, match="unknown objective 'crown'; valid: ibp, crown-ibp"):
        objective_for("crown", loss_fusion=True)


@pytest.mark.parametrize("loss_fusion", [True, False])
def test_crown_ibp_trains_mixed_during_the_ramp_and_pure_ibp_at_eps_max(data, loss_fusion: bool) -> None:
    train_split, test_split, info = data
    cfg = config(start=1, length=2, epochs=3, objective="crown-ibp", loss_fusion=loss_fusion)
    model = tiny_model(init="default")
    history = train(model, train_split, test_split, info, cfg).history
    ramp, target = history[1], history[2]
    # Fused training batches bound the loss, not the margins: no training verified error then.
    assert (ramp["train"]["verified_err"] is None) == loss_fusion
    assert all(r["test"]["verified_err"] is not None for r in history)  # testing is never fused
    assert target["phase"] == "target" and target["train"]["verified_err"] is not None
    # At ε_max the factor is 0: the test pass is pure IBP, as `fastcert verify --method ibp`.
    assert verify(model, test_split, info, EPS, batch_size=16)["verified_err"] == target["test"]["verified_err"]


def test_interrupt_and_resume_from_state_is_bit_identical(data) -> None:
    train_split, test_split, info = data
    cfg = config(start=1, length=2, epochs=3, regularizers=TERMS)

    def run(stop_after: int | None, start_state: dict | None = None):
        records: list[dict] = []
        states: list[dict] = []
        torch.manual_seed(1)

        def on_epoch_end(record: dict, state: dict, is_best: bool) -> None:
            records.append(record)
            states.append(copy.deepcopy(state))

        try:
            train(
                tiny_model(),
                train_split,
                test_split,
                info,
                cfg,
                generator=torch.Generator().manual_seed(5),
                on_epoch_end=on_epoch_end,
                start_state=start_state,
                should_stop=lambda: len(records) == stop_after,
            )
        except Interrupted as stop:
            assert stop.completed_epochs == stop_after
        return records, states

    full, full_states = run(None)
    partial, partial_states = run(stop_after=1)
    assert len(partial) == 1
    resumed, resumed_states = run(None, start_state=partial_states[-1])
    assert [r["epoch"] for r in resumed] == [2, 3] and resumed[0]["resumed"] and not resumed[1]["resumed"]

    def numbers(record: dict) -> dict:
        return {k: v for k, v in record.items() if k not in ("epoch_time", "resumed")}

    assert [numbers(r) for r in partial + resumed] == [numbers(r) for r in full]
    for got, want in zip(resumed_states[-1]["model"].values(), full_states[-1]["model"].values()):
        assert torch.equal(got, want)


def test_rng_capture_of_a_cpu_run_never_initializes_cuda_when_a_gpu_is_visible(monkeypatch) -> None:
    """Issue 24: the checkpointed RNG states touch CUDA only in a process that uses it (reading a
    CUDA RNG state initializes CUDA, on every visible GPU). A visible GPU is simulated.

    (torch.optim's graph-capture check in ``Adam.step`` asks the accelerator for its current stream
    whenever a GPU is visible, which initializes CUDA too: torch's own, not simulated here.)"""

    def refusing(name):  # one function per name (torch._dynamo's registry refuses one object twice)
        def refuse(*args, **kwargs):
            raise AssertionError(f"a CPU run called torch.cuda.{name}")

        return refuse

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for name in ("get_rng_state_all", "set_rng_state_all", "get_rng_state", "set_rng_state", "_lazy_init"):
        monkeypatch.setattr(torch.cuda, name, refusing(name))
    state = training.capture_rng()
    assert state["cuda"] == []
    expected = torch.rand(3)
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)]  # as a run on one GPU saved it
    training.restore_rng(state)
    assert torch.equal(torch.rand(3), expected)  # the CPU state was restored
    assert not torch.cuda.is_initialized()


def test_an_epoch_reads_the_device_a_fixed_number_of_times(data, monkeypatch) -> None:
    """Metrics, losses and gradient norms stay on the device during an epoch (on a GPU every read
    waits for the device): the number of reads by fastcert's code does not grow with the number of
    batches. (Adam reads its step counter, a CPU tensor, with ``item`` every step: not counted.)"""
    train_split, test_split, info = data
    reads = {"n": 0}

    def counting(original):
        def read(self, *args, **kwargs):
            reads["n"] += f"{os.sep}fastcert{os.sep}" in sys._getframe(1).f_code.co_filename
            return original(self, *args, **kwargs)

        return read

    for name in ("item", "tolist", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, counting(getattr(torch.Tensor, name)))
    counts = []
    for batch_size in (32, 8):  # 2 and 8 training batches, 2 and 6 test batches
        reads["n"] = 0
        train(
            tiny_model(),
            train_split,
            test_split,
            info,
            config(start=1, length=1, epochs=1, batch_size=batch_size, regularizers=TERMS),
        )
        counts.append(reads["n"])
    assert counts[0] == counts[1] > 0


def test_meter_weights_losses_by_batch_size_and_the_rest_per_batch() -> None:
    meter = Meter()
    meter.add({"err": 1.0, "l_relu": 1.0, "robust_loss": None}, batch_size=30)
    meter.add({"err": 0.0, "l_relu": 0.0}, batch_size=10)
    meter.add_layers("active", [0.2, 0.4])
    meter.add_layers("active", [0.4, 0.8])
    summary = meter.summary(["err", "l_relu", "robust_loss"])
    assert summary["err"] == 0.75 and summary["l_relu"] == 0.5 and summary["robust_loss"] is None
    assert summary["active_per_layer"] == pytest.approx([0.3, 0.6]) and summary["active"] == pytest.approx(0.45)
    assert summary["inactive"] is None


@pytest.mark.parametrize("method", ["ours", "vanilla"])
def test_training_on_learnable_data_reduces_verified_error(method: str) -> None:
    train_split, test_split, info = load_dataset("mnist", source="synthetic", train_size=512, test_size=200)
    model = tiny_model(init=training_method(method).init)
    cfg = train_config(
        method,
        eps_train=0.02,
        eps_test=0.02,
        start=1,
        length=2,
        epochs=4,
        batch_size=32,
        lr=3e-3,
    )
    before = verify(model, test_split, info, 0.02)["verified_err"]
    result = train(model, train_split, test_split, info, cfg, generator=torch.Generator().manual_seed(0))
    assert before == 1.0
    assert result.last["verified_err"] < 0.9
