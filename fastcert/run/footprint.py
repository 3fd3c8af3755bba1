"""Whether one training run fits in its device's memory, torch-free.

Why: ``fastcert train`` refuses a spec that cannot fit before anything is allocated (torch would
otherwise fail in its allocator with a traceback, after the run directory was made), and the workflow
packs small runs onto one GPU by the same estimate (:func:`slot_need`). It lives in ``run`` (imports
point down: the workflow's ``fastcert.pipeline`` asks it, the run never asks the workflow).
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from fastcert.datasets import DATASETS
from fastcert.run.spec import RunSpec

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


def _train_pass_elements(spec: RunSpec) -> float:
    """Activation-sized elements the training pass's autograd graph holds on one sub-batch."""
    _, activations, _ = _footprint(spec)
    bounds = "crown-ibp" if spec.method == "crown-ibp" else "ibp"
    return TRAIN_PASS_COPIES[bounds] * math.ceil(spec.batch_size / spec.grad_accumulation) * activations


def _test_pass_elements_per_example(spec: RunSpec) -> float:
    """Elements of the non-fused CROWN-IBP test pass's margin coefficients per example (0 for IBP runs)."""
    if spec.method != "crown-ibp":
        return 0.0
    _, _, widest = _footprint(spec)
    return TEST_PASS_COEFFICIENT_COPIES * (DATASETS[spec.dataset].num_classes - 1) * widest


def per_epoch_test_batch(spec: RunSpec) -> int | None:
    """The per-epoch test pass's batch where it must differ from the training batch, else None: fewer
    examples where the CROWN-IBP test pass's K−1 margin coefficients would outgrow the training pass
    (TinyImageNet's 199 margins: about 100 GB at batch 128 for CNN-7), so that the test pass never sets
    a run's peak memory.

    Each example's bounds do not depend on the batch it is in, so this changes no number (up to float
    rounding), only how many examples are bounded at once.
    """
    per_example = _test_pass_elements_per_example(spec)
    if per_example == 0.0:
        return None
    batch = max(1, math.floor(_train_pass_elements(spec) / per_example))
    return batch if batch < spec.batch_size else None


def bound_pass_bytes(spec: RunSpec) -> int:
    """Peak of the batch-dependent memory: the training pass's autograd graph on one sub-batch, or the
    CROWN-IBP test pass's margin coefficients on one test batch (:func:`per_epoch_test_batch`), whichever is larger."""
    test = _test_pass_elements_per_example(spec) * (per_epoch_test_batch(spec) or spec.batch_size)
    return math.ceil(FLOAT_BYTES * max(_train_pass_elements(spec), test))


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


# Where a container or a SLURM job caps the memory (cgroup v2, then v1); the smaller of the cap and
# the machine's physical memory is what a CPU run can have.
_CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))


def host_memory_bytes() -> int:
    """Physical memory of this machine, or less where a cgroup (container, SLURM job) caps it."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    for path in _CGROUP_LIMITS:
        try:
            limits.append(int(path.read_text().strip()))
        except (OSError, ValueError):  # absent, or "max": no cap
            continue
    return min(limits)


def _size(n_bytes: float) -> str:
    """Bytes in the binary unit (MiB to EiB) that keeps the number below 1024."""
    value, units = n_bytes / 2**20, ("MiB", "GiB", "TiB", "PiB", "EiB")
    for unit in units[:-1]:
        if value < 1024:
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} {units[-1]}"


def fit_error(spec: RunSpec, available_bytes: int, where: str) -> str | None:
    """Why ``spec`` cannot train in ``available_bytes`` of ``where``'s memory (naming the key to
    change and the estimate), or None when it fits."""
    need = training_memory_bytes(spec)
    if need <= available_bytes:
        return None
    smallest_batch = training_memory_bytes(dataclasses.replace(spec, batch_size=1, grad_accumulation=1))
    key, advice = (
        ("width", "lower width")
        if smallest_batch > available_bytes
        else ("batch_size", "lower batch_size or raise grad_accumulation")
    )
    return (
        f"{key}: training {spec.model} on {spec.dataset} at width {spec.width:g} with batch_size {spec.batch_size} "
        f"needs about {_size(need)} (estimate: weights, gradients, Adam state, activations, data), more than the "
        f"{_size(available_bytes)} of memory of {where}; {advice}"
    )
