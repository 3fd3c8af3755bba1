"""Which GPU a local training job trains on: slots of one GPU of its own (issue 18).

Why: on a workstation Snakemake starts as many training jobs as ``--cores`` allows, and every one
would take GPU 0. Each GPU is cut into ``slots`` equal slots, one lock file per slot
(``<dir>/gpu<i>.slot<j>.lock``); a job takes the slots its memory estimate needs
(:func:`fastcert.run.footprint.slot_need`) on one GPU with :class:`fastcert.locks.FileLock`, whose
``flock`` the kernel releases when the process dies (SIGKILL, OOM kill), so a slot never leaks. With
every slot taken a job waits, saying so in one log line. GPUs with the most free slots come first, so
that runs spread over the GPUs before they share one.

Under SLURM, or wherever ``CUDA_VISIBLE_DEVICES`` is set, the scheduler has placed the job and nothing
here applies. A job on the CPU sees no GPU at all (:func:`hide_gpus_from_cpu_job`). Torch-free: the GPU
count is an argument (the lifecycle passes torch's; tests a fake one).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from fastcert.locks import FileLock, is_locked, read_holder

GPUS_ENV = "FASTCERT_GPUS"  # GPUs of this machine, where the driver's count is not the one to use
SLOTS_DIR_ENV = "FASTCERT_GPU_SLOTS_DIR"  # where the slot lock files live (default below)
SLOTS_PER_GPU_ENV = "FASTCERT_GPU_SLOTS"  # slots per GPU (default 1: a run takes a whole GPU)
GPU_MEMORY_ENV = "FASTCERT_GPU_MEMORY_GB"  # memory per GPU for packing (default: the GPU's own)
VISIBLE_GPUS_ENV = "CUDA_VISIBLE_DEVICES"  # read by CUDA once, when the process first queries it
SCHEDULED_ENV = (VISIBLE_GPUS_ENV, "SLURM_JOB_ID")  # set: a scheduler chose the GPU


def detected_gpus(environ: Mapping[str, str] = os.environ, driver: Path = Path("/proc/driver/nvidia/gpus")) -> int:
    """GPUs of this machine without torch (the workflow asks while Snakemake parses): ``$FASTCERT_GPUS``,
    else the NVIDIA driver's entries (none: 0)."""
    raw = environ.get(GPUS_ENV)
    if raw is not None:
        if not raw.isdigit():
            raise ValueError(f"{GPUS_ENV}={raw!r}: expected a number of GPUs")
        return int(raw)
    return len(list(driver.iterdir())) if driver.is_dir() else 0


def slots_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The machine-wide directory of slot lock files: ``$FASTCERT_GPU_SLOTS_DIR``, else one per user in
    ``$XDG_RUNTIME_DIR`` or the temporary directory (every job of one user on this machine sees it)."""
    if environ.get(SLOTS_DIR_ENV):
        return Path(environ[SLOTS_DIR_ENV])
    base = environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return Path(base) / f"fastcert-gpu-slots-{os.getuid()}"


def slots_per_gpu(environ: Mapping[str, str] = os.environ) -> int:
    """``$FASTCERT_GPU_SLOTS`` (a positive integer), default 1."""
    raw = environ.get(SLOTS_PER_GPU_ENV, "1")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{SLOTS_PER_GPU_ENV}={raw!r}: expected a positive integer (slots per GPU)")
    return int(raw)


def gpu_memory_gb(environ: Mapping[str, str] = os.environ) -> float | None:
    """``$FASTCERT_GPU_MEMORY_GB``, or None (then the caller uses the GPU's own memory)."""
    raw = environ.get(GPU_MEMORY_ENV)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ValueError(f"{GPU_MEMORY_ENV}={raw!r}: expected a positive number of GB")
    return value


def scheduled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether a scheduler (SLURM, or whoever set ``CUDA_VISIBLE_DEVICES``) already chose the GPU."""
    return any(name in environ for name in SCHEDULED_ENV)


def hide_gpus_from_cpu_job(device: str, environ: MutableMapping[str, str] = os.environ) -> bool:
    """For a job whose ``device`` is the CPU, set ``CUDA_VISIBLE_DEVICES=""`` in ``environ``; return
    whether it did (``auto`` and ``cuda[:N]`` are left to placement or the scheduler).

    Why: before every step torch's Adam (``Optimizer._accelerator_graph_capture_health_check``) asks
    whether an accelerator is available and, where a GPU is, for its current stream, which initializes
    CUDA: a context of ~500 MB on a GPU that a CPU run never uses. CUDA reads the variable when it first
    initializes, so the caller sets it before anything in its process can have queried CUDA.
    """
    if device.partition(":")[0] != "cpu":
        return False
    environ[VISIBLE_GPUS_ENV] = ""
    return True


def slot_path(directory: Path, gpu: int, slot: int) -> Path:
    return directory / f"gpu{gpu}.slot{slot}.lock"


@dataclass
class Placement:
    """Slots held on one GPU until :meth:`release` (or the process's death)."""

    gpu: int
    directory: Path
    slots_per_gpu: int
    locks: list[FileLock] = field(default_factory=list)

    def runs_on_gpu(self) -> int:
        """Runs (this one included) holding slots of this GPU now: distinct holder pids."""
        holders = set()
        for slot in range(self.slots_per_gpu):
            path = slot_path(self.directory, self.gpu, slot)
            if is_locked(path):
                holder = read_holder(path)
                holders.add(holder.pid if holder is not None else f"slot{slot}")
        return len(holders)

    def release(self) -> None:
        for lock in self.locks:
            lock.release()
        self.locks.clear()


def _free_slots(directory: Path, gpu: int, slots: int) -> int:
    return sum(not is_locked(slot_path(directory, gpu, slot)) for slot in range(slots))


def _try_gpu(directory: Path, gpu: int, slots: int, need: int, note: str) -> Placement | None:
    """Take ``need`` slots of ``gpu``, or none (slots taken on the way are given back)."""
    placement = Placement(gpu, directory, slots)
    for slot in range(slots):
        lock = FileLock(slot_path(directory, gpu, slot), note=note)
        if lock.try_acquire():
            placement.locks.append(lock)
            if len(placement.locks) == need:
                return placement
    placement.release()
    return None


def place(
    gpus: int,
    need: int,
    slots: int,
    *,
    directory: Path,
    note: str = "",
    log: Callable[[str], None] = print,
    poll_s: float = 1.0,
) -> Placement:
    """Wait for ``need`` free slots on one of ``gpus`` GPUs (``slots`` each) and hold them."""
    if gpus < 1:
        raise ValueError(f"no GPU to place a run on (gpus = {gpus})")
    if not 1 <= need <= slots:
        raise ValueError(f"a run needs {need} slot(s) but a GPU has {slots}")
    directory.mkdir(parents=True, exist_ok=True)
    told = False
    while True:
        for gpu in sorted(range(gpus), key=lambda g: -_free_slots(directory, g, slots)):
            placement = _try_gpu(directory, gpu, slots, need, note)
            if placement is not None:
                return placement
        if not told:
            log(
                f"waiting for a GPU: {need} free slot(s) on one of {gpus} GPU(s) x {slots} slot(s) "
                f"({directory}); every one is taken"
            )
            told = True
        time.sleep(poll_s * random.uniform(0.5, 1.5))  # jitter: jobs that give slots back do not retry in step
