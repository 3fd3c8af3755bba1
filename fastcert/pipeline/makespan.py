"""How long a campaign takes on a workstation: a list schedule of its runs on GPUs cut into slots.

Why a pure function of its own: the plan (results/plan.tsv) and the README's estimates need the wall
clock on N GPUs, which is not the sum of GPU-hours once runs pack (several small runs on one GPU) or
outnumber the GPUs. The schedule is what placement (fastcert.run.placement) does when every run is
ready at once: longest run first, each on the GPU where the slots it needs are free soonest. Packed
runs are assumed to keep their solo speed (an optimistic bound where they compete for compute).
"""

from __future__ import annotations

from collections.abc import Iterable


def makespan(runs: Iterable[tuple[float, int]], gpus: int, slots_per_gpu: int) -> float:
    """Wall time of ``runs`` — (duration, slots it needs on one GPU) — on ``gpus`` GPUs of ``slots_per_gpu``
    slots each, scheduled longest first, each starting as soon as one GPU has its slots free."""
    if gpus < 1 or slots_per_gpu < 1:
        raise ValueError(f"need at least one GPU and one slot, got {gpus} GPU(s) x {slots_per_gpu} slot(s)")
    free = [[0.0] * slots_per_gpu for _ in range(gpus)]  # when each slot of each GPU is next free
    end = 0.0
    for duration, need in sorted(runs, key=lambda run: -run[0]):
        if not 1 <= need <= slots_per_gpu:
            raise ValueError(f"a run needs {need} slot(s) but a GPU has {slots_per_gpu}")
        start, gpu = min((sorted(slots)[need - 1], index) for index, slots in enumerate(free))
        slots = free[gpu]
        for slot in sorted(range(slots_per_gpu), key=lambda s: slots[s])[:need]:
            slots[slot] = start + duration
        end = max(end, start + duration)
    return end
