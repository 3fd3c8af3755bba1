"""One certified training run in code (the paper's Sec. 3.4 and App. C, Training; authors'
``train.py``), without any disk I/O.

Per training batch the global step gives ε from the smoothed schedule; one bound pass of the
*objective* yields the clean logits (train-mode BN batch statistics), the margin lower bounds and
every ReLU's pre-activation bounds, so nothing is forwarded twice. ε = 0 batches train on clean CE;
when regularizers are on they still get bounds at ε = 1e-6. Otherwise the loss is the robust CE of
the margin bounds, with no clean-loss mixing. In warmup epochs (≤ start+length−1) the regularizers
are added with λ = λ0(1 − ε/ε_max) and their values are logged for every method (the paper plots
them for runs that do not optimize them).

The loader batch is ``batch_size``; with ``grad_accumulation`` = k it is cut into k sub-batches,
each its own forward (so its own BN statistics) with loss/k, and the optimizer steps once per loader
batch, as the authors' ``--batch-size 128 --grad-acc-steps 2``. ε and the step counter advance per
loader batch. After each epoch the model is evaluated on the whole test split in eval mode at the
epoch's last training ε (scaled to ``eps_test``); the best epoch is the one with the lowest test
verified error among epochs at ε_max. That pass also logs Table 6's log(Ê(Δm)/Ê(Δ0)) in every epoch,
from IBP bounds at max(ε, 1e-6) (a measurement-only pass when ε < 1e-6).

Precision (:mod:`fastcert.method.precision`): training runs with TF32 only when
``config.tf32`` says so; the test pass, whose verified error is reported and picks the best
checkpoint, always runs without TF32. The train split's verified error is a by-product of the
training pass and shares its precision.

The bound pass is one pluggable function (:class:`fastcert.method.objectives.Objective`), the one
the run's method names in the method table (:mod:`fastcert.methods`): IBP for Vanilla IBP and Ours,
CROWN-IBP for the CROWN-IBP baseline.
"""

from __future__ import annotations

import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from fastcert.datasets import DatasetInfo
from fastcert.method.bounds import bound_pass
from fastcert.method.losses import certified
from fastcert.method.objectives import BatchResult, Objective, objective_for
from fastcert.method.perturbation import input_box
from fastcert.method.precision import certification, float32_precision
from fastcert.method.regularizers import (
    log_tightness_ratio_tensor,
    relu_counts,
    warmup_regularizer_with_counts,
)
from fastcert.method.schedule import (
    SmoothedSchedule,
    batches_per_epoch,
    reg_lambda,
    regularizer_active,
)
from fastcert.methods import training_method
from fastcert.records import EpochSummary, Phase, epoch_summary
from fastcert.run.data.splits import Split
from fastcert.run.footprint import per_epoch_test_batch
from fastcert.run.spec import RunSpec

NATURAL_BOUND_EPS = 1e-6  # authors' --min-eps-reg: bounds for the regularizers in ε = 0 batches
LR_DECAY = 0.2
STATE_FORMAT = "fastcert-train-state-1"
# Train-metric keys averaged with batch-size weights (the authors' meter uses n = batch size for
# these and n = 1, i.e. equal weight per sub-batch, for everything else).
WEIGHTED_KEYS = ("ce", "err", "robust_loss", "verified_err", "loss")
SCALAR_KEYS = WEIGHTED_KEYS + ("l_tightness", "l_relu", "l_std", "reg", "log_tightness_ratio")
RELU_KEYS = ("active", "inactive", "unstable")


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one run, as the loop reads them: built from a validated run spec by
    :meth:`from_spec` (the spec keys of the same names; defaults live in :class:`RunSpec` only).

    ``objective`` names the method's objective (fastcert.method.objectives); ``augment`` is the
    training data's random crop and flip (on for every run; tests turn it off); ``test_batch_size``
    is None here (the caller may set it: a runtime setting, not in the spec).
    """

    eps_train: float
    eps_test: float
    start: int
    length: int
    epochs: int
    milestones: tuple[int, ...]
    objective: str
    loss_fusion: bool
    regularizers: tuple[str, ...]
    lambda0: float
    tau: float
    constant_lambda: bool
    batch_size: int
    grad_accumulation: int
    lr: float
    grad_clip: float
    augment: bool
    tf32: bool
    # examples per batch of the per-epoch test pass (None: batch_size). A runtime setting, not part of
    # the run's identity: in eval mode the errors do not depend on it (a GPU can take far larger ones).
    test_batch_size: int | None

    @classmethod
    def from_spec(cls, spec: RunSpec) -> TrainConfig:
        """The training configuration of a validated spec (its method's objective from the method table)."""
        assert spec.regularizers is not None, "validate() resolves regularizers from the method"
        return cls(
            eps_train=spec.eps_train,
            eps_test=spec.eps_test,
            start=spec.schedule.start,
            length=spec.schedule.length,
            epochs=spec.schedule.epochs,
            milestones=spec.schedule.milestones,
            objective=training_method(spec.method).objective,
            loss_fusion=spec.loss_fusion,
            regularizers=spec.regularizers,
            lambda0=spec.lambda0,
            tau=spec.tau,
            constant_lambda=spec.constant_lambda,
            batch_size=spec.batch_size,
            grad_accumulation=spec.grad_accumulation,
            lr=spec.lr,
            grad_clip=spec.grad_clip,
            augment=True,
            tf32=spec.tf32,
            test_batch_size=per_epoch_test_batch(spec),
        )


class Diverged(RuntimeError):
    """The training loss (or gradient norm) became NaN/inf; the run cannot continue."""

    def __init__(self, epoch: int, reason: str) -> None:
        super().__init__(f"diverged in epoch {epoch}: {reason}")
        self.epoch, self.reason = epoch, reason


class Interrupted(RuntimeError):
    """``should_stop`` asked to stop; state of the last completed epoch is what counts."""

    def __init__(self, completed_epochs: int) -> None:
        super().__init__(f"interrupted after {completed_epochs} completed epoch(s)")
        self.completed_epochs = completed_epochs


@dataclass
class TrainResult:
    """Per-epoch records (the metrics.jsonl lines of this call) and the best/last summaries."""

    history: list[dict[str, Any]]
    best: EpochSummary | None
    last: EpochSummary | None


class Meter:
    """Running averages: batch-size-weighted for :data:`WEIGHTED_KEYS`, equal weight otherwise.

    Keys never updated (e.g. bounds in a natural epoch) average to None, not to a fake 0. Values
    may be float64 tensors on the model's device (0-d, per-layer 1-d): they are summed there, in
    the order and precision the host would use, and read back in one host synchronisation by
    :meth:`summary`. A training loop then synchronises once per epoch instead of several times
    per batch (on a GPU each read stalls the queue of kernels).
    """

    def __init__(self) -> None:
        self._sum: dict[str, Tensor | float] = {}
        self._weight: dict[str, float] = defaultdict(float)
        self._layers: dict[str, Tensor | list[float]] = {}
        self._layer_count: dict[str, int] = defaultdict(int)

    def add(self, values: dict[str, Tensor | float | None], batch_size: int) -> None:
        for key, value in values.items():
            if value is None:
                continue
            weight = batch_size if key in WEIGHTED_KEYS else 1
            self._sum[key] = self._sum.get(key, 0.0) + value * weight
            self._weight[key] += weight

    def add_layers(self, key: str, per_layer: Tensor | Sequence[float]) -> None:
        if isinstance(per_layer, Tensor):
            self._layers[key] = self._layers.get(key, 0.0) + per_layer  # type: ignore[operator]
        else:
            current = self._layers.setdefault(key, [0.0] * len(per_layer))
            self._layers[key] = [a + b for a, b in zip(current, per_layer)]
        self._layer_count[key] += 1

    def summary(self, keys: Iterable[str]) -> dict[str, Any]:
        """The averages of ``keys`` and the per-layer ReLU fractions, as Python floats."""
        sums, layers = _to_host(self._sum), _to_host(self._layers)
        out: dict[str, Any] = {key: sums[key] / self._weight[key] if self._weight.get(key) else None for key in keys}
        for key in RELU_KEYS:
            per_layer = None if key not in layers else [value / self._layer_count[key] for value in layers[key]]
            out[key] = None if per_layer is None else sum(per_layer) / len(per_layer)
            out[f"{key}_per_layer"] = per_layer
        return out


def _to_host(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every tensor replaced by its Python value, in one host synchronisation."""
    tensors = {key: value for key, value in values.items() if isinstance(value, Tensor)}
    if not tensors:
        return dict(values)
    flat = torch.cat([value.reshape(-1) for value in tensors.values()]).tolist()
    out, start = dict(values), 0
    for key, value in tensors.items():
        size = value.numel()
        out[key] = flat[start] if value.dim() == 0 else flat[start : start + size]
        start += size
    return out


class _FiniteWatch:
    """Training losses and gradient norms, checked for NaN/inf once per epoch (one host
    synchronisation) instead of once per batch; reports the first bad value as the per-batch
    check did (the epoch runs to its end first, and nothing of it is recorded)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self._values: list[tuple[Tensor, str]] = []

    def add(self, value: Tensor, what: str) -> None:
        self._values.append((value.detach(), what))

    def check(self) -> None:
        """Raise :class:`Diverged` on the first non-finite value added since the last check."""
        if not self._values:
            return
        values = torch.stack([value.double() for value, _ in self._values]).tolist()
        labels = [what for _, what in self._values]
        self._values = []
        for value, what in zip(values, labels):
            _check_finite(value, self.epoch, what)


class _Context(NamedTuple):
    """Everything a (sub-)batch computation needs besides the batch itself."""

    model: nn.Module
    info: DatasetInfo
    config: TrainConfig
    objective: Objective


def _batch_terms(
    ctx: _Context,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    sched_eps: float,
    warmup: bool,
    training: bool,
    meter: Meter,
) -> Tensor:
    """Loss of one (sub-)batch at the nominal ``eps``; records the batch's metrics into ``meter``
    (on the device: nothing here waits for the device).

    ``sched_eps`` (the schedule's ε in training-ε units) sets λ and the CROWN-IBP mix; ``warmup``
    says whether this epoch logs (and, for configured terms, optimizes) the regularizers.
    """
    config = ctx.config
    train_regs = warmup and bool(config.regularizers)
    natural = eps == 0
    # Natural training batches skip bounds unless the regularizers need them (authors: 1e-6);
    # the test pass always bounds, to report a verified error.
    if natural and training and not train_regs:
        logits = ctx.model(x)
        ce = F.cross_entropy(logits, y)
        ce_value = ce.detach().double()
        meter.add({"ce": ce_value, "err": (logits.argmax(1) != y).double().mean(), "loss": ce_value}, len(y))
        return ce
    bound_eps = NATURAL_BOUND_EPS if natural and train_regs else eps
    x_lower, x_upper = input_box(x, bound_eps, ctx.info.mean, ctx.info.std)
    out = ctx.objective(
        ctx.model,
        x,
        y,
        x_lower,
        x_upper,
        num_classes=ctx.info.num_classes,
        eps_fraction=sched_eps / config.eps_train,
        training=training,
    )
    ce = F.cross_entropy(out.clean, y)
    loss = ce if natural else out.robust_loss
    named: dict[str, Tensor] = {
        "ce": ce,
        "err": (out.clean.argmax(1) != y).double().mean(),
        "robust_loss": out.robust_loss,
    }
    if out.margin_lower is not None:
        named["verified_err"] = (~certified(out.margin_lower)).double().mean()
    if warmup:  # the regularizers and the ReLU statistics come from one pass over the bounds
        total, parts, counts = warmup_regularizer_with_counts(
            x_lower, x_upper, out.pre_activation, config.regularizers, config.tau
        )
        named.update(l_tightness=parts["tightness"], l_relu=parts["relu"], l_std=parts["std"])
        if train_regs:
            named["reg"] = total
            lam = reg_lambda(sched_eps, config.eps_train, config.lambda0, config.constant_lambda)
            loss = loss + lam * total
    else:
        counts = relu_counts(out.pre_activation)
    named["loss"] = loss
    meter.add({key: value.detach().double() for key, value in named.items()}, len(y))
    for key, fractions in zip(RELU_KEYS, counts.fractions()):
        meter.add_layers(key, fractions)
    if not training:
        meter.add({"log_tightness_ratio": _test_tightness_ratio(ctx, x, bound_eps, x_lower, x_upper, out).double()}, 1)
    elif bound_eps > 0:  # a degenerate box has no widths: the ratio would be 0/0
        ratio = log_tightness_ratio_tensor(x_lower, x_upper, out.pre_activation)
        meter.add({"log_tightness_ratio": ratio.double()}, 1)
    return loss


def _test_tightness_ratio(
    ctx: _Context, x: Tensor, bound_eps: float, x_lower: Tensor, x_upper: Tensor, out: BatchResult
) -> Tensor:
    """Table 6's log(Ê(Δm)/Ê(Δ0)) of a test batch, from IBP bounds at max(ε, 1e-6) px.

    Below 1e-6 (0 in the ε = 0 epochs, float32 noise early in a long ramp) the batch gets its own
    IBP pass at 1e-6, the authors' ``--min-eps-reg`` (certified.py ``cert()`` @50560c6 bounds
    ε = 0 batches only there), so every epoch and method has a value; that pass feeds nothing else.
    """
    if bound_eps >= NATURAL_BOUND_EPS:  # the batch's own bounds (IBP ones for CROWN-IBP too)
        return log_tightness_ratio_tensor(x_lower, x_upper, out.pre_activation)
    x_lower, x_upper = input_box(x, NATURAL_BOUND_EPS, ctx.info.mean, ctx.info.std)
    return log_tightness_ratio_tensor(x_lower, x_upper, bound_pass(ctx.model, x, x_lower, x_upper).pre_activation)


def _sub_batches(x: Tensor, y: Tensor, parts: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Cut a loader batch into ``parts`` near-equal sub-batches (the last batch may not divide)."""
    for xs, ys in zip(torch.tensor_split(x, parts), torch.tensor_split(y, parts)):
        if len(ys):
            yield xs, ys


def _check_sub_batch_sizes(model: nn.Module, n_train: int, config: TrainConfig) -> None:
    """Train-mode BatchNorm cannot normalize a single example: refuse such a split up front."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return
    sizes = [min(config.batch_size, n_train), n_train % config.batch_size or config.batch_size]
    smallest = min(size // config.grad_accumulation for size in sizes)
    if smallest < 2:
        raise ValueError(
            f"batch_size {config.batch_size} with grad_accumulation {config.grad_accumulation} on "
            f"{n_train} training examples gives a sub-batch of {smallest} example(s); BatchNorm "
            "needs at least 2 (change batch_size, grad_accumulation or train_size)"
        )


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cuda_in_use() -> bool:
    """Whether this process has initialized CUDA (a run on a GPU has; a CPU run never does, and
    reading or setting CUDA RNG states would initialize it, on every visible GPU)."""
    return torch.cuda.is_initialized()


def capture_rng() -> dict[str, Any]:
    """Global RNG states (torch, CUDA, numpy, python) in a ``torch.load(weights_only=True)``-safe form.

    The CUDA states only where this process uses CUDA (:func:`_cuda_in_use`), else an empty list.
    """
    state = np.random.get_state(legacy=True)  # the default; the global generator is MT19937, so a tuple
    assert isinstance(state, tuple)
    kind, keys, pos, has_gauss, cached = state
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if _cuda_in_use() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "python": random.getstate(),
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng` (CUDA states only where this process uses CUDA on as many GPUs)."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and _cuda_in_use() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state((numpy["kind"], keys, numpy["pos"], numpy["has_gauss"], numpy["cached"]))
    random.setstate(state["python"])


class _Run:
    """The mutable state of one training run: model, optimizer, counters, best epoch."""

    def __init__(self, model: nn.Module, config: TrainConfig, n_train: int, generator: torch.Generator) -> None:
        self.model, self.config, self.generator = model, config, generator
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=0.0)
        self.lr_scheduler = torch.optim.lr_scheduler.MultiStepLR(
            self.optimizer, milestones=list(config.milestones), gamma=LR_DECAY
        )
        self.batches = batches_per_epoch(n_train, config.batch_size)
        self.schedule = SmoothedSchedule(config.eps_train, config.start, config.length, self.batches)
        self.epoch, self.step = 0, 0
        self.best: EpochSummary | None = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "epoch": self.epoch,
            "step": self.step,
            "best": self.best,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "rng": capture_rng(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a fastcert training state (format {state.get('format')!r})")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.generator.set_state(state["generator"])
        restore_rng(state["rng"])
        self.epoch, self.step, self.best = state["epoch"], state["step"], state["best"]


def _check_finite(value: float, epoch: int, what: str) -> None:
    if not math.isfinite(value):
        raise Diverged(epoch, f"non-finite {what} ({value})")


def _train_epoch(
    run: _Run,
    ctx: _Context,
    split: Split,
    epoch: int,
    should_stop: Callable[[], bool],
    progress: bool,
) -> dict[str, Any]:
    config, model = ctx.config, ctx.model
    warmup = regularizer_active(epoch, config.start, config.length)
    model.train()
    meter, watch = Meter(), _FiniteWatch(epoch)
    batches: Iterable[tuple[Tensor, Tensor]] = split.batches(
        config.batch_size, shuffle=True, augment=config.augment, generator=run.generator
    )
    if progress:
        batches = tqdm(batches, total=run.batches, desc=f"epoch {epoch}/{config.epochs}", leave=False)
    for x, y in batches:
        if should_stop():
            watch.check()  # a divergence before the stop is reported as such
            raise Interrupted(run.epoch)
        eps = run.schedule.eps(run.step)
        for xs, ys in _sub_batches(x, y, config.grad_accumulation):
            loss = _batch_terms(
                ctx,
                xs,
                ys,
                eps=eps,
                sched_eps=eps,
                warmup=warmup,
                training=True,
                meter=meter,
            )
            watch.add(loss, f"training loss at step {run.step}")
            (loss / config.grad_accumulation).backward()
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=config.grad_clip).detach()
        watch.add(grad_norm, f"gradient norm at step {run.step}")
        meter.add({"grad_norm": grad_norm.double()}, 1)
        run.optimizer.step()
        run.optimizer.zero_grad()
        run.step += 1
    watch.check()
    return meter.summary(SCALAR_KEYS + ("grad_norm",))


@torch.no_grad()
def _test_epoch(
    ctx: _Context,
    split: Split,
    epoch: int,
    eval_eps: float,
    sched_eps: float,
    should_stop: Callable[[], bool],
    completed: int,
) -> dict[str, Any]:
    config = ctx.config
    ctx.model.eval()
    meter = Meter()
    warmup = regularizer_active(epoch, config.start, config.length)
    with certification():  # its verified error is reported and picks the best checkpoint
        for x, y in split.batches(config.test_batch_size or config.batch_size, shuffle=False, augment=False):
            if should_stop():
                raise Interrupted(completed)
            _batch_terms(
                ctx,
                x,
                y,
                eps=eval_eps,
                sched_eps=sched_eps,
                warmup=warmup,
                training=False,
                meter=meter,
            )
    return meter.summary(SCALAR_KEYS)


def _finite_only(record: dict[str, Any]) -> dict[str, Any]:
    """Replace NaN/±inf metrics (e.g. an overflowing test bound) by None and list them under
    ``nonfinite`` ("split.key"), so records stay valid JSON and never carry garbage numbers."""
    nonfinite = []
    for split in ("train", "test"):
        for key, value in record[split].items():
            if isinstance(value, float) and not math.isfinite(value):
                record[split][key] = None
                nonfinite.append(f"{split}.{key}")
    record["nonfinite"] = nonfinite
    return record


def train(
    model: nn.Module,
    train_split: Split,
    test_split: Split,
    info: DatasetInfo,
    config: TrainConfig,
    *,
    generator: torch.Generator | None = None,
    objective: Objective | None = None,
    on_epoch_end: Callable[[dict[str, Any], dict[str, Any], bool], None] | None = None,
    start_state: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    progress: bool = False,
) -> TrainResult:
    """Train ``model`` (already initialized, on its device) for ``config.epochs`` epochs.

    ``generator`` draws data order and augmentation (default: seeded from ``torch.initial_seed()``).
    ``on_epoch_end(record, state, is_best)`` gets each epoch's metrics record and the resumable
    state (pass it back as ``start_state`` to continue after that epoch). Raises :class:`Diverged`
    on a non-finite loss and :class:`Interrupted` when ``should_stop()`` turns true (checked before
    every batch).
    """
    with float32_precision(config.tf32):
        return _train(
            model,
            train_split,
            test_split,
            info,
            config,
            generator=generator,
            objective=objective,
            on_epoch_end=on_epoch_end,
            start_state=start_state,
            should_stop=should_stop,
            progress=progress,
        )


def _train(
    model: nn.Module,
    train_split: Split,
    test_split: Split,
    info: DatasetInfo,
    config: TrainConfig,
    *,
    generator: torch.Generator | None,
    objective: Objective | None,
    on_epoch_end: Callable[[dict[str, Any], dict[str, Any], bool], None] | None,
    start_state: dict[str, Any] | None,
    should_stop: Callable[[], bool],
    progress: bool,
) -> TrainResult:
    objective = objective or objective_for(config.objective, loss_fusion=config.loss_fusion)
    generator = generator or torch.Generator().manual_seed(torch.initial_seed())
    _check_sub_batch_sizes(model, len(train_split), config)
    run = _Run(model, config, len(train_split), generator)
    if start_state is not None:
        run.load_state_dict(start_state)
    ctx = _Context(model, info, config, objective)
    device = _device_of(model)
    history: list[dict[str, Any]] = []
    resumed = start_state is not None
    for epoch in range(run.epoch + 1, config.epochs + 1):
        lr = run.optimizer.param_groups[0]["lr"]
        _sync(device)
        started = time.perf_counter()
        train_metrics = _train_epoch(run, ctx, train_split, epoch, should_stop, progress)
        _sync(device)
        epoch_time = time.perf_counter() - started
        run.lr_scheduler.step()
        sched_eps = run.schedule.epoch_eps(epoch)
        eval_eps = config.eps_test * (sched_eps / config.eps_train)
        test_metrics = _test_epoch(ctx, test_split, epoch, eval_eps, sched_eps, should_stop, run.epoch)
        record = {
            "epoch": epoch,
            "phase": run.schedule.phase(epoch),
            "eps": sched_eps,
            "eval_eps": eval_eps,
            "lr": lr,
            "epoch_time": epoch_time,
            "resumed": resumed,
            "train": train_metrics,
            "test": test_metrics,
        }
        record = _finite_only(record)
        resumed = False
        run.epoch = epoch
        is_best = record["phase"] == Phase.TARGET and (
            run.best is None or test_metrics["verified_err"] < run.best["verified_err"]
        )
        if is_best:
            run.best = epoch_summary(record)
        history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(record, run.state_dict(), is_best)
        if should_stop() and epoch < config.epochs:
            raise Interrupted(run.epoch)
    return TrainResult(history, run.best, epoch_summary(history[-1]) if history else None)
