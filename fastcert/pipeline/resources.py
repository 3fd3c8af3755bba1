"""What a run costs: wall time on the reference GPU and host memory, from its spec.

The guide is the paper's Table 7 per-epoch times (seconds per epoch at ε = 0, on the ramp and at the
target ε on one RTX 2080 Ti, read from config/paper_results.yaml), scaled by the fraction of the
training set, width² and the scale's time factor (e.g. a CPU is slower).
"""

from __future__ import annotations

import math
from typing import Any

from fastcert.datasets import DATASETS
from fastcert.phases import phase_counts
from fastcert.pipeline.scales import dataset_transform
from fastcert.run.spec import RunSpec

Guide = dict[tuple[str, str, str], tuple[float, float, float]]


def epoch_time_guide(table7: dict[str, Any], levels: dict[str, Any]) -> Guide:
    """Per-epoch seconds (ε = 0, ramp, target) by spec (dataset, model, method), from the paper's Table 7.

    ``table7`` is config/paper_results.yaml's ``tables.table7``, whose rows name datasets, models and
    methods as the paper prints them; ``levels`` (config/experiments.yaml) maps those names to spec
    values. MNIST has no ε = 0 epoch (printed as null): its ramp time stands in.
    """
    guide: Guide = {}
    for row in table7["rows"]:
        names = tuple(levels[axis][row[axis]]["spec"][axis] for axis in ("dataset", "model", "method"))
        ramp = row["epoch_time_eps_ramp"]
        eps0 = row["epoch_time_eps_0"] if row["epoch_time_eps_0"] is not None else ramp
        guide[names] = (eps0, ramp, row["epoch_time_eps_target"])
    return guide


def data_fraction(spec: RunSpec) -> float:
    """Fraction of the full training set a run uses."""
    return min(1.0, (spec.data.train_size or math.inf) / DATASETS[spec.dataset].n_train)


def estimated_seconds(spec: RunSpec, scale: dict[str, Any], train: dict[str, Any], guide: Guide) -> float:
    """Expected wall time of one run on the reference GPU, scaled to the run's size and scale.

    ``train`` is the workflow config's ``train`` section (``gpu_speedup``); ``guide`` the per-epoch
    times of :func:`epoch_time_guide`.
    """
    schedule = spec.schedule
    counts = phase_counts(schedule.start, schedule.length, schedule.epochs)
    per_epoch = guide[(spec.dataset, spec.model, spec.method)]
    seconds = sum(n * t for n, t in zip(counts, per_epoch)) * data_fraction(spec) * spec.width**2
    return seconds * dataset_transform(scale, spec.dataset)["time_factor"] / train["gpu_speedup"]


def runtime_minutes(spec: RunSpec, scale: dict[str, Any], train: dict[str, Any], guide: Guide, attempt: int) -> int:
    """Requested runtime: the estimate with a margin, longer on every retry, never below the floor."""
    minutes = estimated_seconds(spec, scale, train, guide) / 60 * train["margin"]
    return math.ceil(max(train["min_runtime"], minutes) * attempt)


def memory_mb(spec: RunSpec, train: dict[str, Any]) -> int:
    """Host memory: a base plus the dataset held in memory, scaled by the fraction of it used."""
    memory = train["mem_mb"]
    return math.ceil(memory["base"] + memory[spec.dataset] * data_fraction(spec))


# --- GPU memory of one training run -------------------------------------------------------------

# Per (model, dataset) at width 1 with BatchNorm everywhere: (parameters, activation elements of one
# example summed over every Conv2d/BatchNorm/ReLU/Linear output, the largest single activation).
# Derived from fastcert.method.models (a test rebuilds them); parameters scale with width², activations
# with width (bn "conv"/"none" have fewer activations: the estimate stays an upper bound for them).
MODEL_FOOTPRINT: dict[tuple[str, str], tuple[int, int, int]] = {
    ("cnn7", "mnist"): (13_259_338, 528_394, 50_176),
    ("cnn7", "cifar10"): (17_192_650, 689_674, 65_536),
    ("cnn7", "tinyimagenet"): (17_290_120, 2_459_336, 262_144),
    ("wide_resnet", "mnist"): (17_615_434, 1_444_106, 100_352),
    ("wide_resnet", "cifar10"): (21_547_882, 1_885_706, 131_072),
    ("wide_resnet", "tinyimagenet"): (91_424_776, 9_373_384, 655_360),
    ("resnext", "mnist"): (13_677_706, 1_895_690, 100_352),
    ("resnext", "cifar10"): (17_611_018, 2_475_530, 131_072),
    ("resnext", "tinyimagenet"): (16_981_960, 3_851_976, 131_072),
}
FLOAT_BYTES = 4  # training and bounds run in float32
# Copies of the weights a run keeps on the device: weights, gradients, Adam's two moments.
STATE_COPIES = 4
# Activation-sized tensors the autograd graph of one training pass holds per activation, measured on
# the CPU (tests/memory_probe.py: peak resident bytes per example, CNN-7 CIFAR-10): IBP keeps clean,
# center and radius rows and the interval ReLU's temporaries (measured 5.1); CROWN-IBP's loss-fused
# backward pass adds the relaxation slopes and its coefficient rows (measured 7.2). Rounded up.
TRAIN_PASS_COPIES = {"ibp": 6.0, "crown-ibp": 9.0}
# The non-fused CROWN-IBP test pass (no autograd) bounds K−1 margins: its coefficient tensor at the
# widest layer is [batch, K−1, activation] and a few of them live at once (measured 3.3, TinyImageNet).
TEST_PASS_COEFFICIENT_COPIES = 4.0
# What the framework takes whatever the run: CUDA context and cuDNN workspace on a GPU (~300–500 MB;
# on the CPU the probe's batch-independent part was ~270 MB).
FRAMEWORK_BYTES = 512 * 2**20


def _footprint(spec: RunSpec) -> tuple[float, float, float]:
    """(parameters, activation elements per example, largest activation) at the spec's width."""
    params, activations, widest = MODEL_FOOTPRINT[(spec.model, spec.dataset)]
    return params * spec.width**2, activations * spec.width, widest * spec.width


def model_state_bytes(spec: RunSpec) -> int:
    """Weights, gradients and Adam state."""
    params, _, _ = _footprint(spec)
    return math.ceil(STATE_COPIES * FLOAT_BYTES * params)


def bound_pass_bytes(spec: RunSpec) -> int:
    """Peak of the batch-dependent memory: the training pass's autograd graph on one sub-batch, or the
    CROWN-IBP test pass's margin coefficients on one batch, whichever is larger."""
    _, activations, widest = _footprint(spec)
    bounds = "crown-ibp" if spec.method == "crown-ibp" else "ibp"
    sub_batch = math.ceil(spec.batch_size / spec.grad_accumulation)
    train = TRAIN_PASS_COPIES[bounds] * sub_batch * activations
    margins = DATASETS[spec.dataset].num_classes - 1
    test = TEST_PASS_COEFFICIENT_COPIES * spec.batch_size * margins * widest if bounds == "crown-ibp" else 0.0
    return math.ceil(FLOAT_BYTES * max(train, test))


def device_data_bytes(spec: RunSpec) -> int:
    """The uint8 train and test images, which a run holds on its device."""
    info = DATASETS[spec.dataset]
    n_images = (spec.data.train_size or info.n_train) + (spec.data.test_size or info.n_test)
    return n_images * math.prod(info.input_shape)


def training_memory_bytes(spec: RunSpec) -> int:
    """Device memory one training run needs at its peak (what decides how many runs share a GPU).

    Counts the framework's fixed part, the model state (weights, gradients, Adam), the data held on
    the device and the larger of the training pass's autograd graph and the CROWN-IBP test pass's
    coefficients. Evidence: tests/test_pipeline_resources.py compares the batch-dependent part with the
    peak resident memory of real training on the CPU (tests/memory_probe.py).
    """
    return FRAMEWORK_BYTES + model_state_bytes(spec) + bound_pass_bytes(spec) + device_data_bytes(spec)


def slot_need(spec: RunSpec, gpu_memory_gb: float | None, slots_per_gpu: int) -> int:
    """GPU slots a run takes when a GPU is cut into ``slots_per_gpu`` equal slots of its memory.

    The packing rule: as many slots as its :func:`training_memory_bytes` fills, at least one, at most a
    whole GPU; with one slot per GPU, or no known GPU memory, a run takes a whole GPU. So runs share a
    GPU only where their estimates fit in it together.
    """
    if slots_per_gpu == 1 or gpu_memory_gb is None:
        return slots_per_gpu
    slot_bytes = gpu_memory_gb * 2**30 / slots_per_gpu
    return min(slots_per_gpu, max(1, math.ceil(training_memory_bytes(spec) / slot_bytes)))


def gpu_job_limit(train: dict[str, Any], detected_gpus: int) -> int | None:
    """Most training jobs a workstation runs at once: its GPUs (``train.gpus``, else ``detected_gpus``)
    times ``train.slots_per_gpu``; None without a GPU (CPU scales: ``--cores`` decides)."""
    gpus = train["gpus"] if train["gpus"] is not None else detected_gpus
    return gpus * train["slots_per_gpu"] if gpus else None
