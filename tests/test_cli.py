"""The ``fastcert`` command line: train/verify, exit statuses, errors before any work."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from fastcert.run.cli import main
from fastcert.io import read_jsonl

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
        ({"schedule": {"start": 2, "length": 10, "epochs": 5, "milestones": []}}, "schedule.length: ramp"),
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
    code = main(["verify", "--checkpoint", str(trained / "checkpoint_last.pt"), "--method", "ibp",
                 "--out", str(target), "--batch-size", "16"])
    assert code == 0
    written = json.loads(target.read_text())
    assert json.loads(capsys.readouterr().out) == written
    last = read_jsonl(trained / "metrics.jsonl")[-1]
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
    for name in ("ibp", method):
        assert main(["verify", "--checkpoint", checkpoint, "--method", name, "--test-size", "4", "--eps", "0.002"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["method"] == name and result["n"] == 4
        errors[name] = result["verified_err"]
    assert errors[method] <= errors["ibp"]


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
