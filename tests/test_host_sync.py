"""No host-device synchronization inside a training step or a test batch (issue 24 §2).

Counted on the CPU with :class:`host_sync.SyncRecorder`: the same code runs on a GPU, where each
counted operation would make the host wait for the device's queue. Two runs of one epoch differ
only in their number of training steps and test batches; what they record beyond each other is
what one step and one test batch cost, and must be nothing but the justified few below.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import torch
from host_sync import Event, SyncRecorder
from soundness import single_thread  # noqa: F401  (autouse: tiny tensors, shared cores)
from train_configs import train_config

from fastcert.method import regularizers
from fastcert.method.affine import channel_constant
from fastcert.method.models import build
from fastcert.run.data.loading import load_dataset
from fastcert.run.training import TrainConfig, train

BATCH = 4
# (op, innermost frame): what may happen per training step. torch.optim.Adam keeps each parameter's
# step counter on the host unless ``capturable`` or ``fused`` (asserted below), and reads it there
# to form the bias corrections: a host tensor read, for which the host waits for nothing.
PER_STEP = {("_local_scalar_dense", "optimizer.py:_get_value")}
# What may happen once per epoch (or once per run or process).
PER_EPOCH = PER_STEP | {
    ("lift_fresh", "adam.py:_init_group"),  # Adam's host step counters, made at the first step
    ("tolist", "training.py:_to_host"),  # the epoch's metrics, read in one go (Meter.summary)
    ("tolist", "training.py:check"),  # the epoch's losses and gradient norms, checked for NaN/inf
    ("lift_fresh", "affine.py:channel_constant"),  # a dataset's mean and std, copied once per process
    ("lift_fresh", "regularizers.py:_size_column"),  # layer sizes, copied once per process
}
CASES: dict[str, dict[str, Any]] = {
    # ε ramps in epoch 1, the warmup regularizers are optimized, CIFAR augmentation is drawn
    "ours-ramp": {"regularizers": ("tightness", "relu"), "start": 1, "length": 2},
    # CROWN-IBP mixed with IBP (loss fusion in training, margins in the test pass)
    "crown-ibp-ramp": {"objective": "crown-ibp", "start": 1, "length": 2},
    # ε = 0 epoch: clean training batches, a test pass on the point box x itself
    "natural": {"start": 2, "length": 1, "grad_accumulation": 2},
}


def record(config: TrainConfig, train_size: int, test_size: int) -> Counter[Event]:
    train_split, test_split, info = load_dataset(
        "cifar10", source="synthetic", train_size=train_size, test_size=test_size, seed=1
    )
    torch.manual_seed(0)
    model = build("cnn7", "cifar10", width=1 / 16)
    for cache in (channel_constant, regularizers._size_column):  # each run makes its own once-only copies
        cache.cache_clear()
    with SyncRecorder() as recorder:
        train(model, train_split, test_split, info, config, generator=torch.Generator().manual_seed(3))
    return recorder.counts()


def keys(counts: Counter[Event]) -> set[tuple[str, str]]:
    return {(event.op, event.frame) for event in counts}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_training_step_and_a_test_batch_do_not_wait_for_the_device(case: str) -> None:
    config = train_config(eps_train=0.1, eps_test=0.1, epochs=1, batch_size=BATCH, **CASES[case])
    one = record(config, train_size=2 * BATCH, test_size=BATCH)
    three = record(config, train_size=4 * BATCH, test_size=2 * BATCH)
    extra = three - one  # two more training steps and one more test batch
    assert not one - three, "a longer epoch cannot do less"
    assert keys(extra) <= PER_STEP, "\n".join(str(event) for event in extra if (event.op, event.frame) not in PER_STEP)
    assert keys(one) <= PER_EPOCH, "\n".join(str(event) for event in one if (event.op, event.frame) not in PER_EPOCH)
    # Adam's reads are of host tensors because training makes it neither capturable nor fused
    defaults = torch.optim.Adam([torch.zeros(1)]).defaults
    assert not defaults["capturable"] and not defaults["fused"]
    parameters = sum(1 for _ in build("cnn7", "cifar10", width=1 / 16).parameters())
    assert sum(extra.values()) == 2 * parameters  # one read per parameter and step, nothing else


def test_the_recorder_sees_each_kind_of_synchronization() -> None:
    """The counter itself: every kind it claims to flag is flagged (else the test above proves nothing)."""
    x = torch.randn(6, requires_grad=True)
    mask = x.detach() > 0
    with SyncRecorder() as recorder:
        _ = x.sum().item()
        _ = bool(x.sum() > 0)
        _ = torch.equal(x, x)
        _ = x.detach().tolist()
        _ = x[mask]
        _ = torch.nonzero(mask)
        x.new_zeros(6).masked_scatter(mask, x).sum().backward()
        _ = torch.tensor([1.0, 2.0], device=x.device)
        _ = torch.arange(3)
        _ = torch.arange(3, device=x.device)  # with device=: not flagged
        _ = x * 2  # ordinary arithmetic: not flagged
    ops = Counter((event.kind, event.op) for event in recorder.events)
    assert ops == Counter(
        {
            ("read", "_local_scalar_dense"): 2,
            ("read", "equal"): 1,
            ("read", "tolist"): 1,
            ("shape", "index"): 1,
            ("shape", "nonzero"): 1,
            ("shape", "masked_scatter_backward"): 1,
            ("python-data", "lift_fresh"): 1,
            ("host-factory", "arange"): 1,
        }
    )
    here = "test_host_sync.py:test_the_recorder_sees_each_kind_of_synchronization"
    assert {event.frame for event in recorder.events} == {here}
