"""Time one training step: clean vs IBP (vs IBP + warmup regularizers), on the same model and batch.

Every step is a full optimizer step (zero_grad, forward, loss, backward, Adam step) on one shared
model and optimizer, so the ratios compare like with like. Steps are timed interleaved (the order
rotates every round) and repeated; the medians are reported, together with the median of the
per-round ratios, which is robust to slow drifts of a shared machine's load.

On CUDA each step is timed with CUDA events (after a synchronize, so the queue is empty), peak
memory is ``torch.cuda.max_memory_allocated``, and ``--epoch-images N`` also times N images' worth of
IBP steps back to back (one epoch, e.g. 50,000 for CIFAR-10; synthetic data of the dataset's shape).
``--json PATH`` writes every figure for benchmarks/gpu_check.sh.

Run ``python benchmarks/bench_step.py --help``. To add a line (e.g. CROWN-IBP), add a step
factory to ``STEPS``: it receives the :class:`Setup` and returns a zero-argument step function.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import datetime
import math
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastcert.io import atomic_write_json
from fastcert.method.bounds import bound_pass
from fastcert.method.losses import robust_ce, spec_matrix
from fastcert.method.models import DATASET_SHAPES, build
from fastcert.method.perturbation import input_box
from fastcert.method.precision import FLOAT32, TF32, float32_precision, tf32_override

NORMALIZATION = {  # the paper's App. C, "Datasets" (fastcert.datasets)
    "mnist": ((0.0,), (1.0,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "tinyimagenet": ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
}


@dataclass
class Setup:
    """What every step works on: one model, one optimizer, one batch and its input box."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    x: Tensor
    labels: Tensor
    x_lower: Tensor
    x_upper: Tensor
    C: Tensor
    device: torch.device


Step = Callable[[], None]


def clean_step(s: Setup) -> Step:
    def step() -> None:
        s.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(s.model(s.x), s.labels).backward()
        s.optimizer.step()

    return step


def ibp_step(s: Setup) -> Step:
    def step() -> None:
        s.optimizer.zero_grad(set_to_none=True)
        result = bound_pass(s.model, s.x, s.x_lower, s.x_upper, C=s.C)
        robust_ce(result.lower).backward()
        s.optimizer.step()

    return step


def ibp_eps0_step(s: Setup) -> Step:
    """IBP on a zero-width box at x (an ε = 0 batch): the engine runs a plain clean pass."""

    def step() -> None:
        s.optimizer.zero_grad(set_to_none=True)
        result = bound_pass(s.model, s.x, s.x, s.x, C=s.C)
        robust_ce(result.lower).backward()
        s.optimizer.step()

    return step


def ibp_regularized_step(s: Setup) -> Step:
    from fastcert.method.regularizers import relu_loss, tightness_loss
    from fastcert.run.spec import RunSpec  # the default tau and lambda0

    def step() -> None:
        s.optimizer.zero_grad(set_to_none=True)
        result = bound_pass(s.model, s.x, s.x_lower, s.x_upper, C=s.C)
        reg = tightness_loss(s.x_lower, s.x_upper, result.pre_activation, RunSpec.tau) + relu_loss(
            result.pre_activation, RunSpec.tau
        )
        (robust_ce(result.lower) + RunSpec.lambda0 * reg).backward()
        s.optimizer.step()

    return step


def crown_ibp_step(loss_fusion: bool) -> Callable[[Setup], Step]:
    """CROWN-IBP training step mid-ramp (ε = ε_max/2: CROWN pass and IBP mixing both run)."""
    from fastcert.method.crown_ibp import crown_ibp_objective

    def factory(s: Setup) -> Step:
        def step() -> None:
            s.optimizer.zero_grad(set_to_none=True)
            out = crown_ibp_objective(
                s.model,
                s.x,
                s.labels,
                s.x_lower,
                s.x_upper,
                num_classes=s.C.shape[2],
                eps_fraction=0.5,
                training=True,
                loss_fusion=loss_fusion,
            )
            out.robust_loss.backward()
            s.optimizer.step()

        return step

    return factory


STEPS: dict[str, Callable[[Setup], Step]] = {
    "clean": clean_step,
    "ibp": ibp_step,
    "ibp+reg": ibp_regularized_step,
    "ibp@eps0": ibp_eps0_step,
    "crown-ibp": crown_ibp_step(loss_fusion=True),
    "crown-ibp-nf": crown_ibp_step(loss_fusion=False),
}
# (label, numerator step, denominator step, target)
RATIOS = [
    ("IBP / clean", "ibp", "clean", "<= 2.9"),
    ("IBP+regularizers / IBP", "ibp+reg", "ibp", "<= 1.10"),
    ("IBP at eps=0 / clean", "ibp@eps0", "clean", "~ 1"),
    ("CROWN-IBP (fused) / IBP", "crown-ibp", "ibp", "<= 1.5"),
    ("CROWN-IBP fused / non-fused", "crown-ibp", "crown-ibp-nf", "< 1"),
]


def make_setup(args: argparse.Namespace) -> Setup:
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build(args.model, args.dataset, width=args.width)
    channels, size, classes = DATASET_SHAPES[args.dataset]
    if args.classes is not None:  # e.g. K = 200 on CIFAR shapes: what grows with the classes
        fc = model.get_submodule("fc")
        assert isinstance(fc, nn.Linear)
        model.fc = nn.Linear(fc.in_features, args.classes)
        classes = args.classes
    model = model.to(device).train()
    mean, std = NORMALIZATION[args.dataset]
    pixels = torch.rand(args.batch, channels, size, size, generator=generator)
    x = ((pixels - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)).to(device)
    labels = torch.randint(0, classes, (args.batch,), generator=generator).to(device)
    x_lower, x_upper = input_box(x, args.eps, mean, std)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    return Setup(model, optimizer, x, labels, x_lower, x_upper, spec_matrix(labels, classes), device)


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def measure(
    setup: Setup, names: list[str], warmup: int, repeats: int, clock: Callable[[], float]
) -> dict[str, list[float]]:
    """Seconds per step, ``repeats`` rounds, each round running every step once (rotated order)."""
    steps = {name: STEPS[name](setup) for name in names}
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(repeats):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            times[name].append(timed(setup.device, steps[name], clock))
    return times


def timed(device: torch.device, work: Callable[[], None], clock: Callable[[], float]) -> float:
    """Seconds ``work`` takes: CUDA events on a GPU (kernels are asynchronous), else ``clock``."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        work()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start_time = clock()
    work()
    return clock() - start_time


def epoch_seconds(setup: Setup, images: int, clock: Callable[[], float]) -> tuple[int, float]:
    """(steps, seconds) of ``images`` images in IBP training steps of the setup's batch, back to back."""
    step = STEPS["ibp"](setup)
    steps = math.ceil(images / setup.x.shape[0])

    def epoch() -> None:
        for _ in range(steps):
            step()

    return steps, timed(setup.device, epoch, clock)


def peak_memory(args: argparse.Namespace, name: str) -> tuple[float, float]:
    """(peak, peak above the setup) in bytes over two steps of ``name`` after the setup.

    CUDA: allocated tensor memory, in this process. CPU: the peak resident set (``VmHWM``) of a
    fresh child process per step (a peak only grows, and memory freed by one step stays resident
    for the next; ``ru_maxrss`` would even inherit this process's peak across the child's exec).
    """
    if args.device.startswith("cuda"):
        setup = make_setup(args)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step = STEPS[name](setup)
        step()
        step()
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated()), float(torch.cuda.max_memory_allocated() - base)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_child_peak_rss, (args, name))


def _child_peak_rss(args: argparse.Namespace, name: str) -> tuple[float, float]:
    if args.tune_malloc:
        tune_malloc()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    setup = make_setup(args)
    base = _proc_status_bytes("VmRSS")
    step = STEPS[name](setup)
    step()
    step()
    peak = _proc_status_bytes("VmHWM")
    return peak, peak - base


def _proc_status_bytes(key: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return float(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not found in /proc/self/status (peak memory on CPU needs Linux)")


def ratio_rows(times: dict[str, list[float]]) -> list[dict[str, object]]:
    """Each ratio of :data:`RATIOS` whose two steps were timed: of the medians and median per round."""
    rows: list[dict[str, object]] = []
    for label, top, bottom, target in RATIOS:
        if top in times and bottom in times:
            rows.append(
                {
                    "label": label,
                    "target": target,
                    "of_medians": statistics.median(times[top]) / statistics.median(times[bottom]),
                    "median_per_round": statistics.median(a / b for a, b in zip(times[top], times[bottom])),
                }
            )
    return rows


def figures(
    args: argparse.Namespace,
    times: dict[str, list[float]],
    memory: dict[str, tuple[float, float]],
    epoch: tuple[int, float] | None,
) -> dict[str, object]:
    """Everything measured, as JSON (``--json``)."""
    return {
        "date": datetime.date.today().isoformat(),
        "settings": {
            key: getattr(args, key)
            for key in (
                "model",
                "dataset",
                "width",
                "classes",
                "batch",
                "eps",
                "device",
                "clock",
                "warmup",
                "repeats",
                "steps",
                "precision",
            )
        },
        "nvidia_tf32_override": tf32_override(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor(),
        "threads": torch.get_num_threads(),
        "steps_s": {
            name: {"median": statistics.median(v), "min": min(v), "max": max(v), "all": v} for name, v in times.items()
        },
        "ratios": ratio_rows(times),
        "peak_memory_bytes": {name: {"peak": peak, "above_setup": above} for name, (peak, above) in memory.items()},
        "epoch": None
        if epoch is None
        else {
            "images": args.epoch_images,
            "steps": epoch[0],
            "seconds": epoch[1],
            "step": "ibp",
        },
    }


def report(args: argparse.Namespace, times: dict[str, list[float]]) -> str:
    lines = [
        f"# fastcert step benchmark, {datetime.date.today().isoformat()}",
        (
            f"# model {args.model} ({args.dataset}, width {args.width}, {args.classes or 'default'} classes), "
            f"batch {args.batch}, "
            f"eps {args.eps:.5f}, device {args.device}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs "
            f"({platform.processor() or platform.machine()}), "
            f"malloc {'tuned' if args.tune_malloc else 'default'}"
        ),
        f"# precision {args.precision} (TF32 {'on' if args.precision == TF32 else 'off'} for CUDA convolutions and "
        f"matmuls), NVIDIA_TF32_OVERRIDE {tf32_override() or 'unset'}",
        f"# {args.repeats} interleaved rounds after {args.warmup} warmup rounds; {args.clock} clock; medians",
        f"{'step':<12} {'median ms':>10} {'min ms':>8} {'max ms':>8}",
    ]
    for name, values in times.items():
        lines.append(
            f"{name:<12} {1e3 * statistics.median(values):>10.1f} {1e3 * min(values):>8.1f} {1e3 * max(values):>8.1f}"
        )
    lines.append(f"{'ratio':<24} {'of medians':>10} {'median per round':>17} {'target':>8}")
    for row in ratio_rows(times):
        lines.append(
            f"{row['label']:<24} {row['of_medians']:>10.2f} {row['median_per_round']:>17.2f} {row['target']:>8}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="cnn7", choices=["cnn7", "wide_resnet", "resnext"])
    parser.add_argument("--dataset", default="cifar10", choices=sorted(DATASET_SHAPES))
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument(
        "--classes", type=int, default=None, help="replace the classifier by one with this many classes"
    )
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--eps", type=float, default=8 / 255, help="pixel units")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (all its threads), robust to other "
        "processes sharing the cores; use it with --threads 1",
    )
    parser.add_argument(
        "--precision",
        choices=[FLOAT32, TF32],
        default=FLOAT32,
        help="float32 arithmetic of the run described (a spec's tf32: false/true); default: the paper's float32",
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument(
        "--memory",
        action="store_true",
        help="also report each step's peak memory (CPU: peak RSS of a fresh process per step)",
    )
    parser.add_argument(
        "--tune-malloc",
        action="store_true",
        help="glibc: keep freed memory mapped (mallopt M_MMAP_THRESHOLD/M_TRIM_THRESHOLD = 1 GiB)",
    )
    parser.add_argument(
        "--epoch-images",
        type=int,
        default=None,
        metavar="N",
        help="also time one epoch of N images in IBP steps (CIFAR-10: 50000)",
    )
    parser.add_argument("--json", type=str, default=None, metavar="PATH", help="write every figure as JSON here")
    args = parser.parse_args(argv)
    if args.batch < 2:
        parser.error("--batch must be >= 2 (train-mode BatchNorm)")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    if args.clock == "cpu" and not args.device.startswith("cpu"):
        parser.error("--clock cpu measures host CPU time; use it with --device cpu")
    return args


def tune_malloc() -> None:
    """Stop glibc from returning large freed blocks to the OS.

    By default glibc serves blocks above 32 MiB with mmap and unmaps them on free, and trims the
    heap top, so a CPU training step re-faults every page of its large temporaries (CNN-7's
    64 MiB hidden-layer weight gradient, Adam's temporaries, ...) on every step; the page faults
    cost more system time than the arithmetic on those buffers. Both settings are process-wide.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    m_trim_threshold, m_mmap_threshold = -1, -3
    if not (libc.mallopt(m_mmap_threshold, 1 << 30) and libc.mallopt(m_trim_threshold, 1 << 30)):
        raise RuntimeError("mallopt failed (not glibc?)")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.tune_malloc:
        tune_malloc()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with float32_precision(args.precision == TF32):  # as the training run it describes
        run(args)


def run(args: argparse.Namespace) -> None:
    setup = make_setup(args)
    times = measure(setup, args.steps, args.warmup, args.repeats, CLOCKS[args.clock])
    print(report(args, times))
    epoch = None
    if args.epoch_images:
        epoch = epoch_seconds(setup, args.epoch_images, CLOCKS[args.clock])
        print(f"one epoch of {args.epoch_images} images: {epoch[0]} IBP steps of {args.batch}, {epoch[1]:.1f} s")
    del setup
    memory: dict[str, tuple[float, float]] = {}
    if args.memory:
        print(f"{'step':<12} {'peak MiB':>10} {'above setup MiB':>16}")
        for name in args.steps:
            peak, above = memory[name] = peak_memory(args, name)
            print(f"{name:<12} {peak / 2**20:>10.0f} {above / 2**20:>16.0f}")
    if args.json:
        atomic_write_json(args.json, figures(args, times, memory, epoch))


if __name__ == "__main__":
    main()
