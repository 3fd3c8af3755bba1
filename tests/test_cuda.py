"""The bound engine and a training run on a GPU (``pytest -m cuda``; skipped without CUDA).

* auto_LiRPA fixture agreement on CUDA (float64 to 1e-9; float32 to 1e-4 with TF32 enabled
  globally and the certification policy on);
* soundness by sampling and PGD (tests/soundness.py) for every model family, IBP and CROWN-IBP,
  train- and eval-mode BN, with TF32 enabled process-wide: the bounds are computed under
  :func:`fastcert.method.precision.certification`, as every verified number is;
* train-mode BatchNorm statistics (clean logits, bounds, running stats) on CUDA against CPU;
* a short ``fastcert train`` on CUDA killed with SIGKILL and resumed.

What the resume test can promise. Several CUDA kernels that training uses are not deterministic:
cuDNN's convolution backward (weight gradient: algorithms that split the reduction and add with
atomics), ``index_add_``/``scatter_add_``/``index_put_(accumulate=True)`` and other atomic-add
reductions, and cuBLAS split-K GEMMs whose workspace order varies unless
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` is set. Without ``torch.use_deterministic_algorithms(True)``
(and that variable) two runs of the same spec differ in the last bits after the first step, and
the differences grow over epochs. So on CUDA the test checks that the rerun resumes after the last
checkpointed epoch, restores that epoch's model, optimizer and RNG state exactly (the checkpoint is
bit-identical to the one the killed run left) and completes with every epoch recorded once and
metrics close to the uninterrupted run's (not bit-identical). On CPU, tests/test_run.py checks
bit-identity.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import torch
from fixture_nets import NAMES, fixture_tensor, load_arrays, load_model, relative_error
from soundness import FAMILIES, check_sound, random_box, randomize_bn
from train_process import launch, wait_for_epochs

from fastcert.method.bounds import bound_pass
from fastcert.method.losses import spec_matrix
from fastcert.method.models import build
from fastcert.method.precision import certification, tf32_in_use
from fastcert.records import METRICS_FILE, RESULT_FILE, read_metrics, read_result
from fastcert.run.lifecycle import load_checkpoint

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")
MODES = ("eval", "train")
EPS = ("eps_small", "eps_large")


@pytest.fixture
def tf32_everywhere() -> Any:
    """TF32 on for matmuls and convolutions process-wide, as a careless caller might leave it."""
    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    assert tf32_in_use() == {"matmul": True, "conv": True}
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cudnn.allow_tf32 = saved[1]


def fixture_margins(name: str, mode: str, eps: str, method: str, dtype: torch.dtype) -> tuple[Any, dict[str, Any]]:
    arrays = load_arrays(name)
    model = load_model(name, arrays, dtype).to(CUDA).train(mode == "train")
    x, C = (fixture_tensor(arrays, key, dtype, CUDA) for key in ("x", "C"))
    box = (fixture_tensor(arrays, f"{eps}/x_{side}", dtype, CUDA) for side in "LU")
    with torch.no_grad():
        return bound_pass(model, x, *box, C=C, method=method), arrays


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("eps", EPS)
@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
def test_fixture_agreement_float64(name: str, mode: str, eps: str, method: str) -> None:
    result, arrays = fixture_margins(name, mode, eps, method, torch.float64)
    key = f"{mode}/{eps}/{method.replace('-', '_')}"
    assert relative_error(result.clean, fixture_tensor(arrays, f"{mode}/logits_f64")) <= 1e-9
    assert relative_error(result.lower, fixture_tensor(arrays, f"{key}/margin_lb_f64")) <= 1e-9
    assert relative_error(result.upper, fixture_tensor(arrays, f"{key}/margin_ub_f64")) <= 1e-9


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("mode", MODES)
def test_fixture_agreement_float32_with_tf32_enabled_globally(tf32_everywhere: None, name: str, mode: str) -> None:
    with certification():
        result, arrays = fixture_margins(name, mode, "eps_large", "crown-ibp", torch.float32)
    key = f"{mode}/eps_large/crown_ibp"
    assert relative_error(result.lower, fixture_tensor(arrays, f"{key}/margin_lb")) <= 1e-4
    assert relative_error(result.upper, fixture_tensor(arrays, f"{key}/margin_ub")) <= 1e-4


@pytest.mark.parametrize("method", ["ibp", "crown-ibp"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("name", "dataset"), FAMILIES)
def test_model_bounds_are_sound_on_cuda_with_tf32_enabled_globally(
    tf32_everywhere: None, name: str, dataset: str, mode: str, method: str
) -> None:
    """Float32 at 1/4 width (wider than the CPU test: a GPU is fast), margins folded."""
    torch.manual_seed(0)
    model = randomize_bn(build(name, dataset, width=0.25), seed=4).to(CUDA).train(mode == "train")
    channels, size = (1, 28) if dataset == "mnist" else (3, 32)
    x, x_lower, x_upper = (t.to(CUDA) for t in random_box((4, channels, size, size), 0.02, seed=5, dtype=torch.float32))
    C = spec_matrix(torch.tensor([0, 3, 9, 5], device=CUDA), 10)
    with certification():
        result = check_sound(model, x, x_lower, x_upper, C=C, method=method)
    assert result.lower.is_cuda and (result.upper > result.lower).all()
    assert tf32_in_use() == {"matmul": True, "conv": True}, "the caller's setting is restored"


@pytest.mark.parametrize(("name", "dataset"), FAMILIES)
def test_train_mode_bn_statistics_on_cuda_match_cpu(name: str, dataset: str) -> None:
    """Float64: clean logits, IBP bounds, ReLU input bounds and the running stats after the pass."""
    torch.manual_seed(0)
    cpu_model = randomize_bn(build(name, dataset, width=0.125), seed=4).double().train()
    cuda_model = build(name, dataset, width=0.125).double().train()
    cuda_model.load_state_dict(cpu_model.state_dict())
    cuda_model.to(CUDA)
    channels, size = (1, 28) if dataset == "mnist" else (3, 32)
    x, x_lower, x_upper = random_box((8, channels, size, size), 0.02, seed=6)
    C = spec_matrix(torch.arange(8) % 10, 10, dtype=torch.float64)
    on_cpu = bound_pass(cpu_model, x, x_lower, x_upper, C=C)
    on_cuda = bound_pass(cuda_model, x.to(CUDA), x_lower.to(CUDA), x_upper.to(CUDA), C=C.to(CUDA))
    for what in ("clean", "lower", "upper"):
        assert relative_error(getattr(on_cuda, what), getattr(on_cpu, what)) <= 1e-9, what
    for (cuda_l, cuda_u), (cpu_l, cpu_u) in zip(on_cuda.pre_activation, on_cpu.pre_activation, strict=True):
        assert relative_error(cuda_l, cpu_l) <= 1e-9 and relative_error(cuda_u, cpu_u) <= 1e-9
    cpu_state, cuda_state = cpu_model.state_dict(), cuda_model.state_dict()
    for key in cpu_state:
        if key.endswith(("running_mean", "running_var")):
            assert relative_error(cuda_state[key], cpu_state[key]) <= 1e-9, key


CUDA_RUN = {
    "dataset": "mnist",
    "data": {"source": "synthetic", "train_size": 512, "test_size": 256},
    "model": "cnn7",
    "width": 0.25,
    "method": "ours",
    "schedule": {"start": 1, "length": 2, "epochs": 4, "milestones": [3]},
    "eps_train": 0.1,
    "eps_test": 0.1,
    "batch_size": 64,
    "seed": 3,
    "device": "cuda",
}


def test_training_on_cuda_killed_and_resumed(tmp_path: Path) -> None:
    """See the module docstring for what resume can promise on CUDA."""
    spec = tmp_path / "run.yaml"
    spec.write_text(json.dumps(CUDA_RUN))
    reference, out = tmp_path / "reference", tmp_path / "killed"
    proc = launch(spec, reference)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr

    proc = launch(spec, out)
    wait_for_epochs(out, proc, 2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    left = load_checkpoint(out / "checkpoint_last.pt")
    epochs = CUDA_RUN["schedule"]["epochs"]  # type: ignore[index]
    assert 1 <= left["epoch"] < epochs and not (out / RESULT_FILE).exists()

    killed = read_metrics(out / METRICS_FILE)
    rerun = launch(spec, out)
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert f"resuming after epoch {left['epoch']}" in stdout
    records = read_metrics(out / METRICS_FILE)
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    assert [r["resumed"] for r in records] == [r["epoch"] == left["epoch"] + 1 for r in records]
    assert records[: left["epoch"]] == killed[: left["epoch"]], "the checkpointed epochs are kept as they were"
    assert load_checkpoint(out / "checkpoint_last.pt")["epoch"] == epochs
    result = read_result(out / RESULT_FILE)
    assert result["status"] == "completed" and result["provenance"]["device"] != "cpu"
    assert result["precision"] == {
        "training": "float32",
        "certification": "float32",
        "nvidia_tf32_override": None,
    }
    expected = read_metrics(reference / METRICS_FILE)
    for got, want in zip(records, expected, strict=True):
        assert got["test"]["err"] == pytest.approx(want["test"]["err"], abs=0.1)
        assert got["test"]["verified_err"] == pytest.approx(want["test"]["verified_err"], abs=0.1)


def test_a_local_job_waits_for_a_free_gpu_and_trains_on_it(tmp_path: Path) -> None:
    """Placement (fastcert.run.placement) on the real GPUs: with every GPU's slot held here the job waits,
    saying so; given the last GPU it trains there, and result.json says so."""
    import os
    import subprocess
    import sys

    from fastcert.locks import FileLock
    from fastcert.run.placement import SLOTS_DIR_ENV, slot_path

    gpus = torch.cuda.device_count()
    locks = [FileLock(slot_path(tmp_path, gpu, 0)) for gpu in range(gpus)]
    for lock in locks:
        assert lock.try_acquire()
    spec, out = tmp_path / "spec.json", tmp_path / "run"
    spec.write_text(json.dumps({**CUDA_RUN, "device": "auto", "schedule": {"start": 1, "length": 1, "epochs": 2}}))
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastcert.run.cli", "train", "--spec", str(spec), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, SLOTS_DIR_ENV: str(tmp_path)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("waiting for a GPU: 1 free slot(s)")
    locks[-1].release()
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert f"on GPU {gpus - 1}, 1 of its 1 slot(s)" in stdout
    result = read_result(out / RESULT_FILE)
    assert result["provenance"]["gpu"] == {"index": gpus - 1, "slots": 1, "slots_per_gpu": 1, "runs_sharing": 1}


CPU_RUN_ON_A_GPU_MACHINE = """
import json, sys, torch
from fastcert.run.cli import main
sys.argv = ["fastcert", "train", "--spec", sys.argv[1], "--out", sys.argv[2], "--no-progress"]
status = main()
print(json.dumps({"status": status, "cuda_initialized": torch.cuda.is_initialized()}))
"""


def test_a_cpu_run_on_a_gpu_machine_never_initializes_cuda(tmp_path: Path) -> None:
    """A ``fastcert train`` with ``device: cpu`` where GPUs are visible takes no GPU memory (a CUDA context
    is ~500 MB on every GPU it touches): RNG capture and restore leave CUDA alone, and torch's Adam.step,
    which asks for the current accelerator stream (that would initialize CUDA), finds no GPU, because the
    command hides them from a CPU run (issue 24; tests/test_cli.py checks the variable on a CPU machine)."""
    import os
    import subprocess
    import sys

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**CUDA_RUN, "device": "cpu", "schedule": {"start": 1, "length": 1, "epochs": 2}}))
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    probe = subprocess.run(
        [sys.executable, "-c", CPU_RUN_ON_A_GPU_MACHINE, str(spec), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        env=env,
    )
    assert json.loads(probe.stdout.splitlines()[-1]) == {"status": 0, "cuda_initialized": False}
