"""What a first GPU run must measure besides step times (issue 24 §5), for benchmarks/gpu_check.sh.

* ``syncs``: host-device synchronizations of fastcert's training loop, counted by
  ``torch.cuda.set_sync_debug_mode("warn")`` over one epoch of N and of 2N batches (synthetic
  MNIST, MNIST CNN-7, IBP with the warmup regularizers): the difference is what N batches add, and
  should be nothing (tests/test_host_sync.py counts the same on the CPU);
* ``kernels``: kernels per IBP training step and the GPU busy fraction (kernel time / wall time,
  ``torch.profiler``) at batch 256 and 1024;
* ``tf32``: the IBP training step with TF32 off (the paper's float32) and on;
* ``cudnn_benchmark``: the IBP training step with ``torch.backends.cudnn.benchmark`` off and on.

On the CPU (``--device cpu``, the rehearsal) the same code runs at the sizes given; what only a GPU
has (sync counts, kernel time) is recorded as null. Needs torch and fastcert only.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_step

from fastcert.io import atomic_write_json
from fastcert.method.precision import float32_precision


def step_setup(device: str, batch: int, width: float) -> bench_step.Setup:
    args = bench_step.parse_args(["--device", device, "--dataset", "mnist", "--batch", str(batch)])
    args.width = width
    return bench_step.make_setup(args)


def median_step_s(setup: bench_step.Setup, repeats: int) -> float:
    step = bench_step.STEPS["ibp"](setup)
    step()  # warmup (cuDNN's autotuning with benchmark on, allocator growth)
    return statistics.median(bench_step.timed(setup.device, step, time.perf_counter) for _ in range(repeats))


def syncs(device: str, batch: int, width: float, batches: int) -> dict[str, Any] | None:
    """Synchronization warnings of one training epoch of ``batches`` and of ``2 * batches`` batches."""
    if not device.startswith("cuda"):
        return None
    from fastcert.method.models import build
    from fastcert.run.data.loading import load_dataset
    from fastcert.run.spec import validate
    from fastcert.run.training import TrainConfig, train

    counts = []
    for n in (batches, 2 * batches):
        train_split, test_split, info = load_dataset(
            "mnist", source="synthetic", train_size=n * batch, test_size=batch, device=device
        )
        torch.manual_seed(0)
        model = build("cnn7", "mnist", width=width).to(device)
        spec = validate({"method": "ours", "dataset": "mnist", "eps_train": 0.4, "eps_test": 0.4, "batch_size": batch})
        config = dataclasses.replace(TrainConfig.from_spec(spec), start=1, length=2, epochs=1, milestones=())
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train(model, train_split, test_split, info, config)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        counts.append(sum("synchroniz" in str(w.message) for w in caught))
    return {"batches": [batches, 2 * batches], "warnings": counts, "per_batch": (counts[1] - counts[0]) / batches}


def kernels(device: str, batch: int, width: float, steps: int) -> dict[str, Any]:
    """Kernels (GPU) or operators (CPU) per IBP training step, and the GPU busy fraction."""
    from torch.profiler import ProfilerActivity, profile

    setup = step_setup(device, batch, width)
    step = bench_step.STEPS["ibp"](setup)
    step()
    gpu = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    bench_step.timed(setup.device, lambda: None, time.perf_counter)  # an empty queue before the profile
    with profile(activities=activities) as prof:
        started = time.perf_counter()
        for _ in range(steps):
            step()
        if gpu:
            torch.cuda.synchronize()
        wall = time.perf_counter() - started
    events = prof.events()
    if gpu:
        launched = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.device_time for e in launched) / 1e6 / wall
    else:
        launched = [e for e in events if e.cpu_parent is None]
        busy = None
    return {"batch": batch, "per_step": len(launched) / steps, "busy_fraction": busy, "step_s": wall / steps}


def switched(device: str, batch: int, width: float, repeats: int, setting: Callable[[bool], Any]) -> dict[str, float]:
    """Median IBP step seconds with ``setting(False)`` and ``setting(True)`` in force."""
    out = {}
    for on in (False, True):
        with setting(on):
            out["on" if on else "off"] = median_step_s(step_setup(device, batch, width), repeats)
    out["on/off"] = out["on"] / out["off"]
    return out


def cudnn_benchmark(on: bool) -> Any:
    return torch.backends.cudnn.flags(enabled=True, benchmark=on, allow_tf32=False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--width", type=float, default=1.0, help="model width (CNN-7, MNIST)")
    parser.add_argument("--batches", type=int, nargs=2, default=[256, 1024], help="the two batch sizes compared")
    parser.add_argument("--sync-batches", type=int, default=8, help="training batches of the shorter sync epoch")
    parser.add_argument("--steps", type=int, default=5, help="profiled steps / timed repeats")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    small, _ = args.batches
    with float32_precision(False):  # the paper's precision, as its runs train
        figures = {
            "device": args.device,
            "width": args.width,
            "syncs": syncs(args.device, small, args.width, args.sync_batches),
            "kernels": [kernels(args.device, batch, args.width, args.steps) for batch in args.batches],
            "cudnn_benchmark": switched(args.device, small, args.width, args.steps, cudnn_benchmark),
        }
    figures["tf32"] = switched(args.device, small, args.width, args.steps, float32_precision)
    atomic_write_json(args.json, figures)
    print(figures)


if __name__ == "__main__":
    main()
