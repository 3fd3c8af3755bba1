"""Whether one training run fits in its device's memory, torch-free.

Why: ``fastcert train`` refuses a spec that cannot fit before anything is allocated (torch would
otherwise fail in its allocator with a traceback, after the run directory was made). The estimate is
:func:`fastcert.pipeline.resources.training_memory_bytes`, by which the workflow also packs GPUs.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from fastcert.pipeline.resources import training_memory_bytes
from fastcert.run.spec import RunSpec

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
