"""GPU slots of a workstation (fastcert.run.placement) with a fake GPU count and real processes, and the
packing rule (fastcert.run.footprint.slot_need)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fastcert.run import placement
from fastcert.run.footprint import slot_need, training_memory_bytes
from fastcert.run.spec import validate

REPO = Path(__file__).resolve().parents[1]
# A job that takes NEED slots of one of GPUS fake GPUs (SLOTS each), says where, and holds them until killed.
HOLDER = """
import sys, time
from pathlib import Path
from fastcert.run.placement import place
gpus, need, slots, directory = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
held = place(gpus, need, slots, directory=directory, note="test", log=lambda line: print(line, flush=True), poll_s=0.05)
print(f"placed on GPU {held.gpu}", flush=True)
time.sleep(600)
"""


def start_holder(directory: Path, gpus: int, need: int, slots: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(gpus), str(need), str(slots), str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline().strip()


@pytest.fixture
def holders():
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def test_n_plus_one_jobs_on_n_gpus_one_waits_and_a_killed_holder_frees_its_gpu_at_once(tmp_path, holders) -> None:
    for _ in range(2):
        holders.append(start_holder(tmp_path, 2, 1, 1))
    gpus = {first_line(proc) for proc in holders}
    assert gpus == {"placed on GPU 0", "placed on GPU 1"}  # one each, not both on GPU 0
    waiting = start_holder(tmp_path, 2, 1, 1)
    holders.append(waiting)
    assert first_line(waiting).startswith("waiting for a GPU: 1 free slot(s) on one of 2 GPU(s) x 1 slot(s)")
    time.sleep(0.5)
    assert waiting.poll() is None  # still waiting: no third job on two GPUs
    holders[1].send_signal(signal.SIGKILL)  # no clean-up: the kernel releases its flock
    killed = time.monotonic()
    holders[1].wait()
    assert first_line(waiting) in gpus
    assert time.monotonic() - killed < 5


def test_small_runs_pack_into_the_slots_of_one_gpu_and_a_large_one_waits_for_a_whole_gpu(tmp_path, holders) -> None:
    for _ in range(2):  # two runs of 2 slots fill the one GPU of 4 slots
        holders.append(start_holder(tmp_path, 1, 2, 4))
    assert [first_line(proc) for proc in holders] == ["placed on GPU 0", "placed on GPU 0"]
    probe = placement.Placement(0, tmp_path, 4)
    assert probe.runs_on_gpu() == 2
    large = start_holder(tmp_path, 1, 4, 4)
    holders.append(large)
    assert first_line(large).startswith("waiting for a GPU: 4 free slot(s)")
    for proc in holders[:2]:
        proc.kill()
    assert first_line(large) == "placed on GPU 0"


def spec(dataset: str, model: str, method: str, batch_size: int):
    return validate(
        {
            "dataset": dataset,
            "model": model,
            "method": method,
            "batch_size": batch_size,
            "eps_train": 0.1,
            "eps_test": 0.1,
        }
    )


def test_packing_gives_a_run_the_slots_its_memory_fills_never_more_than_a_gpu() -> None:
    mnist = spec("mnist", "cnn7", "ours", 256)
    assert training_memory_bytes(mnist) < 10 * 2**30
    assert slot_need(mnist, 80, 8) == 1  # a small fraction of an 80 GB GPU: one of 8 slots of 10 GB
    assert slot_need(mnist, 80, 16) == 1 + training_memory_bytes(mnist) // (5 * 2**30)
    wide = spec("cifar10", "wide_resnet", "crown-ibp", 128)
    assert slot_need(wide, 80, 8) == -(-training_memory_bytes(wide) // (10 * 2**30))
    tiny_wide = spec("tinyimagenet", "wide_resnet", "crown-ibp", 128)
    assert 40 * 2**30 < training_memory_bytes(tiny_wide) < 80 * 2**30
    assert slot_need(tiny_wide, 40, 8) == 8  # more than a 40 GB GPU: all of it
    assert slot_need(mnist, 80, 1) == 1  # the default: a GPU per run
    assert slot_need(mnist, None, 4) == 4  # memory unknown: never pack


def test_settings_come_from_the_environment_and_bad_values_name_the_variable(tmp_path) -> None:
    assert placement.slots_dir({placement.SLOTS_DIR_ENV: str(tmp_path)}) == tmp_path
    assert placement.slots_dir({"XDG_RUNTIME_DIR": "/run/user/7"}) == Path(
        f"/run/user/7/fastcert-gpu-slots-{os.getuid()}"
    )
    assert placement.slots_per_gpu({}) == 1 and placement.slots_per_gpu({placement.SLOTS_PER_GPU_ENV: "4"}) == 4
    assert placement.gpu_memory_gb({}) is None and placement.gpu_memory_gb({placement.GPU_MEMORY_ENV: "80"}) == 80.0
    with pytest.raises(ValueError, match="FASTCERT_GPU_SLOTS='0'"):
        placement.slots_per_gpu({placement.SLOTS_PER_GPU_ENV: "0"})
    with pytest.raises(ValueError, match="FASTCERT_GPU_MEMORY_GB='lots'"):
        placement.gpu_memory_gb({placement.GPU_MEMORY_ENV: "lots"})
    assert placement.scheduled({"CUDA_VISIBLE_DEVICES": "3"}) and placement.scheduled({"SLURM_JOB_ID": "12"})
    assert not placement.scheduled({})


def test_only_a_cpu_job_hides_the_gpus_and_a_gpu_job_keeps_its_placement() -> None:
    """Issue 24 item 4: ``CUDA_VISIBLE_DEVICES=""`` for a CPU job only; ``auto`` and ``cuda[:N]`` keep what
    the scheduler set (or nothing, for slot placement)."""
    for device in ("auto", "cuda", "cuda:1"):
        environ = {"CUDA_VISIBLE_DEVICES": "3"}
        assert not placement.hide_gpus_from_cpu_job(device, environ)
        assert environ == {"CUDA_VISIBLE_DEVICES": "3"}
        empty: dict[str, str] = {}
        assert not placement.hide_gpus_from_cpu_job(device, empty)
        assert empty == {} and not placement.scheduled(empty)
    for device in ("cpu", "cpu:0"):
        environ = {"CUDA_VISIBLE_DEVICES": "3", "SLURM_JOB_ID": "12"}
        assert placement.hide_gpus_from_cpu_job(device, environ)
        assert environ == {"CUDA_VISIBLE_DEVICES": "", "SLURM_JOB_ID": "12"}
