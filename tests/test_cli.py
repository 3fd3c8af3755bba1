"""The ``fastcert`` command line: train/verify, exit statuses, errors before any work."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from run_builders import train_diverged

from fastcert.records import METRICS_FILE, RESULT_FILE, read_metrics, read_result
from fastcert.run import lifecycle
from fastcert.run.cli import main
from fastcert.run.footprint import fit_error, host_memory_bytes, training_memory_bytes
from fastcert.run.spec import validate

CALLERS_VISIBLE_GPUS = os.environ.get("CUDA_VISIBLE_DEVICES")
SPEC = {
    "dataset": "mnist",
    "data": {"source": "synthetic", "train_size": 64, "test_size": 40},
    "model": "cnn7",
    "width": 0.0625,
    "method": "ours",
    "schedule": {"start": 1, "length": 1, "epochs": 2, "milestones": []},
    "eps_train": 0.05,
    "eps_test": 0.05,
    "batch_size": 16,
    "seed": 3,
    "device": "cpu",
}


def write(path: Path, spec: dict) -> Path:
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("cli")
    out = base / "run"
    assert main(["train", "--spec", str(write(base / "run.yaml", SPEC)), "--out", str(out), "--no-progress"]) == 0
    return out


def test_the_test_pass_batch_size_changes_no_error_and_no_identity(trained: Path, tmp_path: Path) -> None:
    """Issue 24 item 4: the per-epoch test pass has its own batch size, a runtime setting."""
    out = tmp_path / "run"
    spec = str(write(tmp_path / "run.yaml", SPEC))
    assert main(["train", "--spec", spec, "--out", str(out), "--no-progress", "--test-batch-size", "7"]) == 0
    for ours, reference in zip(read_metrics(out / METRICS_FILE), read_metrics(trained / METRICS_FILE), strict=True):
        assert ours["train"] == reference["train"]
        assert (ours["test"]["err"], ours["test"]["verified_err"]) == (
            reference["test"]["err"],
            reference["test"]["verified_err"],
        )
    assert json.loads((out / "spec.json").read_text()) == json.loads((trained / "spec.json").read_text())
    assert main(["train", "--spec", spec, "--out", str(tmp_path / "bad"), "--test-batch-size", "0"]) == 2


def test_train_help_documents_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for status in ("0 ", "1 ", "2 ", "3 ", "143", "130"):
        assert f"\n  {status}" in text
    assert "diverged" in text and "resume" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": "vgg"}, "model: unknown value 'vgg'; valid values: cnn7, wide_resnet, resnext"),
        ({"eps_train": -1}, "eps_train: must lie in (0, 1]"),
        ({"typo": 1}, "typo: unknown key"),
        ({"schedule": {"start": 2, "length": 10, "epochs": 5, "milestones": []}}, "schedule.epochs: 5 epochs leave no"),
        ({"batch_size": 100000000000}, "batch_size: 100000000000 is larger than the 64 training examples"),
    ],
)
def test_an_invalid_spec_fails_with_status_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: dict, message: str
) -> None:
    spec = write(tmp_path / "run.yaml", {**SPEC, **change})
    out = tmp_path / "out"
    assert main(["train", "--spec", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fastcert train: error: {spec}: ") and message in err
    assert not out.exists()


def test_unavailable_device_fails_with_status_2_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    spec = write(tmp_path / "run.yaml", SPEC)
    assert main(["train", "--spec", str(spec), "--out", str(out), "--device", "gpu"]) == 2
    assert "device: unknown device 'gpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["train", "--spec", str(spec), "--out", str(out), "--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert not out.exists()


def test_verify_reproduces_the_test_errors_of_the_run(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "verify.json"
    code = main(
        [
            "verify",
            "--checkpoint",
            str(trained / "checkpoint_last.pt"),
            "--method",
            "ibp",
            "--out",
            str(target),
            "--batch-size",
            "16",
        ]
    )
    assert code == 0
    written = json.loads(target.read_text())
    assert json.loads(capsys.readouterr().out) == written
    last = read_metrics(trained / METRICS_FILE)[-1]
    assert written["epoch"] == 2 and written["kind"] == "last" and written["eps"] == 0.05
    assert written["n"] == 40 and written["data"] == {"source": "synthetic", "synthetic": True}
    assert (written["standard_err"], written["verified_err"]) == (last["test"]["err"], last["test"]["verified_err"])


def test_verify_at_a_larger_eps_verifies_no_more(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = str(trained / "checkpoint_best.pt")
    errors = []
    for eps in ("0.01", "0.3"):
        assert main(["verify", "--checkpoint", checkpoint, "--method", "ibp", "--eps", eps]) == 0
        errors.append(json.loads(capsys.readouterr().out)["verified_err"])
    assert errors[0] <= errors[1] and errors[1] == 1.0


@pytest.mark.parametrize("method", ["crown-ibp", pytest.param("crown", marks=pytest.mark.slow)])
def test_verify_with_tighter_bounds_verifies_at_least_what_ibp_verifies(
    trained: Path, capsys: pytest.CaptureFixture[str], method: str
) -> None:
    checkpoint = str(trained / "checkpoint_last.pt")
    errors = {}
    for name in ("ibp", method):  # --method: the old name of --verifier
        assert main(["verify", "--checkpoint", checkpoint, "--method", name, "--test-size", "4", "--eps", "0.002"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert list(result["verifiers"]) == [name] and result["n"] == 4
        errors[name] = result["verified_err"]
    assert errors[method] <= errors["ibp"]


def test_verify_cascade_reports_each_verifier_and_resumes_from_its_shards(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = str(trained / "checkpoint_best.pt")
    target = tmp_path / "cascade.json"
    args = ["verify", "--checkpoint", checkpoint, "--verifier", "crown-ibp,ibp", "--eps", "0.02"]
    assert main([*args, "--out", str(target), "--shard-size", "16"]) == 0
    written = json.loads(target.read_text())
    shards = sorted(path.name for path in (tmp_path / "cascade.json.shards").iterdir())
    assert shards == ["shard-00000.json", "shard-00001.json", "shard-00002.json"]  # 40 examples
    ibp, crown_ibp = written["verifiers"]["ibp"], written["verifiers"]["crown-ibp"]
    assert ibp["tried"] == 40 and crown_ibp["tried"] == 40 - ibp["certified"] - round(written["standard_err"] * 40)
    assert written["verified_err"] == crown_ibp["verified_err"] <= ibp["verified_err"]
    capsys.readouterr()
    assert main([*args, "--out", str(target), "--shard-size", "16"]) == 0  # every shard read back
    again = json.loads(target.read_text())
    assert again["verifiers"] == written["verifiers"]  # the stored seconds too: nothing recomputed
    assert main([*args, "--out", str(target), "--shard-size", "8"]) == 2
    assert "holds a shard of another verification" in capsys.readouterr().err
    jobs = tmp_path / "jobs.json"  # as two cluster jobs, then one that collects their shards
    for part in ("0/2", "1/2"):
        assert main([*args, "--out", str(jobs), "--shard-size", "16", "--part", part]) == 0
        assert json.loads(capsys.readouterr().out)["part"] == part and not jobs.exists()
    assert len(list((tmp_path / "jobs.json.shards").iterdir())) == 3
    assert main([*args, "--out", str(jobs), "--shard-size", "16"]) == 0
    collected = json.loads(jobs.read_text())
    for name, stage in collected["verifiers"].items():
        assert (stage["tried"], stage["certified"]) == (
            written["verifiers"][name]["tried"],
            written["verifiers"][name]["certified"],
        )
    assert main([*args, "--part", "2/2", "--out", str(jobs)]) == 2
    assert "--part must be K/N with 0 <= K < N, got '2/2'" in capsys.readouterr().err
    assert main([*args[:-3], "ibp,alpha-crown"]) == 2
    assert "--verifier: unknown verifier 'alpha-crown'" in capsys.readouterr().err


def test_verify_on_a_test_subset(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = str(trained / "checkpoint_last.pt")
    assert main(["verify", "--checkpoint", checkpoint, "--method", "ibp", "--test-size", "10"]) == 0
    subset = json.loads(capsys.readouterr().out)
    assert subset["n"] == 10 and 0 <= subset["verified_err"] <= 1
    assert main(["verify", "--checkpoint", checkpoint, "--method", "ibp", "--test-size", "0"]) == 2
    assert "--test-size must be >= 1" in capsys.readouterr().err


def test_verify_refuses_a_file_that_is_not_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "model.pt"
    torch.save({"weights": torch.zeros(2)}, bogus)
    assert main(["verify", "--checkpoint", str(bogus), "--method", "ibp"]) == 2
    assert "not a fastcert checkpoint" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    executable = shutil.which("fastcert")
    if executable is None:
        pytest.skip("fastcert is not installed as a console script in this environment")
    proc = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and "train" in proc.stdout and "verify" in proc.stdout


# --- bad input: one line, exit 2, the directory as it was -------------------------------------


def one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"fastcert {command}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def test_an_empty_spec_file_fails_and_creates_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec, out = tmp_path / "run.yaml", tmp_path / "out"
    spec.write_text("# nothing here yet\n")
    assert main(["train", "--spec", str(spec), "--out", str(out)]) == 2
    assert f"{spec}: spec: the spec is empty" in one_error_line(capsys, "train")
    assert not out.exists()


def test_a_spec_with_a_duplicate_key_fails_naming_it_and_both_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec, out = tmp_path / "run.yaml", tmp_path / "out"
    spec.write_text("dataset: mnist\nbatch_size: 16\nmodel: cnn7\nbatch_size: 32\n")
    assert main(["train", "--spec", str(spec), "--out", str(out)]) == 2
    assert "duplicate key 'batch_size' at line 4 (first at line 2)" in one_error_line(capsys, "train")
    assert not out.exists()


def test_a_run_whose_data_fails_to_load_leaves_no_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real CIFAR-10 from an empty data root: the data is missing, and --out must not be bound."""
    monkeypatch.delenv("FASTCERT_DATA_MIRROR", raising=False)
    empty_root = tmp_path / "no-data"
    empty_root.mkdir()
    raw = {
        **SPEC,
        "dataset": "cifar10",
        "data": {"source": "auto", "root": str(empty_root), "train_size": 64, "test_size": 40},
    }
    out = tmp_path / "out"
    assert main(["train", "--spec", str(write(tmp_path / "run.yaml", raw)), "--out", str(out)]) == 2
    one_error_line(capsys, "train")
    assert not out.exists()


@pytest.mark.parametrize(
    ("spec_bytes", "message"),
    [
        (
            json.dumps({**SPEC, "seed": 99999999999999999999999}).encode(),
            "seed: must lie in [0, 18446744073709551615] (2**64 - 1, the most torch accepts), got 9999999",
        ),
        (b"\xff\xfe\x00dataset: mnist\n", "not UTF-8 text (byte 0xff at offset 0); a spec is a YAML file"),
        (b"seed: " + b"9" * 5000 + b"\n", "not valid YAML: Exceeds the limit (4300 digits)"),
        (b"[" * 100000, "not valid YAML: maximum recursion depth exceeded"),
        (b"# " + b"x" * (1 << 20) + b"\n", "larger than 1048576 bytes, not a run spec"),
    ],
    ids=["huge-seed", "not-utf8", "huge-integer", "deep-nesting", "huge-file"],
)
def test_a_spec_that_raised_a_traceback_is_one_line_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec_bytes: bytes, message: str
) -> None:
    spec, out = tmp_path / "run.yaml", tmp_path / "out"
    spec.write_bytes(spec_bytes)
    assert main(["train", "--spec", str(spec), "--out", str(out)]) == 2
    assert f"{spec}: {message}" in one_error_line(capsys, "train")
    assert not out.exists()


def test_a_spec_too_large_for_memory_is_refused_before_anything_is_allocated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """width 1000000 failed in torch's allocator (147456000000000000 bytes) and left two files."""
    spec, out = write(tmp_path / "run.yaml", {**SPEC, "width": 1000000}), tmp_path / "out"
    assert main(["train", "--spec", str(spec), "--out", str(out)]) == 2
    err = one_error_line(capsys, "train")
    assert "error: width: training cnn7 on mnist at width 1e+06 with batch_size 16 needs about " in err
    assert "more than the " in err and " of memory of cpu; lower width" in err
    assert not out.exists()


def test_a_batch_too_large_for_memory_names_batch_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory that holds the model at batch size 1 but not at the spec's batch: the key is batch_size."""
    raw = {**SPEC, "data": {**SPEC["data"], "train_size": 1024}, "batch_size": 1024}
    need = training_memory_bytes(validate(raw))
    at_one = training_memory_bytes(dataclasses.replace(validate(raw), batch_size=1))
    monkeypatch.setattr(lifecycle, "host_memory_bytes", lambda: (need + at_one) // 2)
    spec, out = write(tmp_path / "run.yaml", raw), tmp_path / "out"
    assert main(["train", "--spec", str(spec), "--out", str(out)]) == 2
    err = one_error_line(capsys, "train")
    assert "error: batch_size: training cnn7 on mnist at width 0.0625 with batch_size 1024 needs about " in err
    assert err.endswith("; lower batch_size or raise grad_accumulation\n")
    assert not out.exists()


def test_host_memory_is_the_physical_memory_or_a_smaller_cgroup_cap() -> None:
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 0 < host_memory_bytes() <= physical
    assert fit_error(validate(SPEC), host_memory_bytes(), "cpu") is None  # the tests' own runs fit


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_a_data_root_that_is_a_file_fails_with_one_line_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    blocker = tmp_path / "passwd"
    blocker.write_text("not a data root")
    root = blocker if where == "file" else blocker / "data"
    raw = {**SPEC, "data": {"source": "auto", "root": str(root), "train_size": 64, "test_size": 40}}
    out = tmp_path / "out"
    assert main(["train", "--spec", str(write(tmp_path / "run.yaml", raw)), "--out", str(out)]) == 2
    err = one_error_line(capsys, "train")
    assert f"data root {root} is not a directory" in err and "data.root" in err
    assert not out.exists() and blocker.read_text() == "not a data root"


@pytest.mark.parametrize("where", ["file", "under-file", "proc"])
def test_an_out_path_that_cannot_be_a_directory_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    blocker = tmp_path / "taken.txt"
    blocker.write_text("not a run directory")
    out = {"file": blocker, "under-file": blocker / "run", "proc": Path("/proc/fastcert-test-run")}[where]
    assert main(["train", "--spec", str(write(tmp_path / "run.yaml", SPEC)), "--out", str(out)]) == 2
    assert str(out) in one_error_line(capsys, "train")
    assert blocker.read_text() == "not a run directory" and not Path("/proc/fastcert-test-run").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in read-only directories")
def test_an_out_directory_without_write_permission_fails_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert main(["train", "--spec", str(write(tmp_path / "run.yaml", SPEC)), "--out", str(locked / "run")]) == 2
    assert "permission denied" in one_error_line(capsys, "train")
    assert list(locked.iterdir()) == []


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated", "random", "directory"])
def test_verify_on_a_damaged_checkpoint_fails_with_one_line_naming_it(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    checkpoint = tmp_path / "checkpoint.pt"
    original = (trained / "checkpoint_last.pt").read_bytes()
    if damage == "empty":
        checkpoint.write_bytes(b"")
    elif damage == "truncated":
        checkpoint.write_bytes(original[: len(original) // 2])
    elif damage == "random":
        checkpoint.write_bytes(os.urandom(4096))
    elif damage == "directory":
        checkpoint.mkdir()
    assert main(["verify", "--checkpoint", str(checkpoint), "--method", "ibp"]) == 2
    err = one_error_line(capsys, "verify")
    assert f"{checkpoint}: " in err
    assert ("no such checkpoint file" if damage in ("missing", "directory") else "not a readable checkpoint") in err


def test_verify_of_a_run_that_diverged_without_a_best_checkpoint_is_one_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 22: the run directory and why it has nothing to verify, not "no such file"."""
    run = train_diverged(tmp_path / "run")
    assert not (run / "checkpoint_best.pt").exists()
    capsys.readouterr()
    out = tmp_path / "v.json"
    argv = ["verify", "--checkpoint", str(run / "checkpoint_best.pt"), "--verifier", "ibp", "--out", str(out)]
    assert main(argv) == 2
    diverged = read_result(run / RESULT_FILE)["diverged"]
    assert diverged["epoch"] == 1 and diverged["reason"].startswith("non-finite training loss")
    assert one_error_line(capsys, "verify") == (
        f"fastcert verify: error: {run}: the run diverged in epoch 1 ({diverged['reason']}); "
        "no checkpoint_best.pt to verify\n"
    )
    assert not out.exists() and not (tmp_path / "v.json.shards").exists()


def test_verify_to_an_unwritable_out_fails_with_one_line(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["verify", "--checkpoint", str(trained / "checkpoint_last.pt"), "--method", "ibp", "--out", str(tmp_path)])
        == 2
    )
    assert f"--out {tmp_path}: cannot write" in one_error_line(capsys, "verify")


# A ``fastcert`` process (main() without argv) whose Adam steps record CUDA_VISIBLE_DEVICES as torch's
# accelerator health check (the one that would initialize CUDA) sees it.
HEALTH_CHECK_PROBE = """
import json, os, sys
import torch
from fastcert.run.cli import main
seen = []
check = torch.optim.Optimizer._accelerator_graph_capture_health_check
def recording(self):
    seen.append(os.environ.get("CUDA_VISIBLE_DEVICES"))
    check(self)
torch.optim.Optimizer._accelerator_graph_capture_health_check = recording
sys.argv = ["fastcert", *sys.argv[1:]]
status = main()
print(json.dumps({"status": status, "seen": seen}))
"""


def test_a_cpu_run_hides_the_gpus_from_adams_accelerator_check(tmp_path: Path) -> None:
    """Issue 24 item 4: ``fastcert train`` of a ``device: cpu`` spec sets ``CUDA_VISIBLE_DEVICES=""`` before
    its first Adam step asks for an accelerator (on a GPU machine that would create a CUDA context)."""
    spec, out = write(tmp_path / "run.yaml", SPEC), tmp_path / "run"
    env = {key: value for key, value in os.environ.items() if key != "CUDA_VISIBLE_DEVICES"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    argv = ["train", "--spec", str(spec), "--out", str(out), "--no-progress"]
    probe = subprocess.run(
        [sys.executable, "-c", HEALTH_CHECK_PROBE, *argv], capture_output=True, text=True, timeout=600, env=env
    )
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout.splitlines()[-1])
    assert report["status"] == 0
    assert len(report["seen"]) == 8 and set(report["seen"]) == {""}  # 2 epochs of 64 examples, batches of 16


def test_the_command_called_with_argv_leaves_its_callers_environment_alone(trained: Path) -> None:
    """The module's CPU runs (``trained``) call main(argv) in this process: its GPUs stay visible."""
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == CALLERS_VISIBLE_GPUS


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["verify", "--help"]])
def test_help_answers_without_importing_torch(argv: list[str]) -> None:
    """``fastcert --help`` must answer at once: torch costs seconds (and more under load) to import."""
    code = (
        "import sys\nfrom fastcert.run.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit as exit_:\n    assert exit_.code == 0\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.splitlines()[-1] == "NO-TORCH"
    assert "usage: fastcert" in proc.stdout
