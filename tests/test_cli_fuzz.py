"""Fuzz of the ``fastcert`` command line (issue 21 §3): whatever bytes a spec, a checkpoint or a file of a
run directory being resumed holds (random, non-UTF-8, truncated, bit-flipped, zeroed, huge), ``fastcert
train`` and ``fastcert verify`` end with exit status 0, 2, 3 or 143, an error is one line on stderr, never
a traceback, and no file is left partial: a refused run leaves the directory as it was, a finished one
leaves every file whole.

The command runs in-process (``main``) so that each example costs no interpreter start; two cases run the
real console entry point. By default each property tries a few examples; the ``slow`` variants search long.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastcert.io import read_json
from fastcert.records import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    METRICS_FILE,
    RESULT_FILE,
    SPEC_FILE,
    read_metrics,
    read_result,
)
from fastcert.run.cli import main
from fastcert.run.lifecycle import EXIT_COMPLETED, execute, load_checkpoint
from fastcert.run.spec import validate

OUTCOMES = {0, 2, 3, 143}
EXAMPLES = [pytest.param(5, id="few"), pytest.param(150, id="many", marks=pytest.mark.slow)]
SPEC = {
    "dataset": "mnist",
    "data": {"source": "synthetic", "train_size": 64, "test_size": 32},
    "model": "cnn7",
    "width": 0.0625,
    "method": "ours",
    "schedule": {"start": 1, "length": 1, "epochs": 4, "milestones": [3]},
    "eps_train": 0.05,
    "eps_test": 0.05,
    "batch_size": 16,
    "seed": 5,
    "device": "cpu",
}
STOPPED_AFTER = 3  # the resumed run trains one epoch


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def quiet(_: str) -> None:
    """Swallow the per-epoch log lines."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """The spec file, a run stopped by SIGTERM after epoch 3, and the same run completed."""
    base = tmp_path_factory.mktemp("fuzz")
    spec_file = base / "run.yaml"
    spec_file.write_text(json.dumps(SPEC))

    def stop(line: str) -> None:
        if line.startswith(f"epoch {STOPPED_AFTER}/"):
            os.kill(os.getpid(), signal.SIGTERM)  # the run's own handler saves, then stops

    stopped, completed = base / "stopped", base / "completed"
    assert execute(validate(SPEC), stopped, log=stop) == 128 + signal.SIGTERM
    shutil.copytree(stopped, completed)
    assert execute(validate(SPEC), completed, log=quiet) == EXIT_COMPLETED
    return spec_file, stopped, completed


@st.composite
def damaged(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` damaged as disks, copies and hand edits damage files."""
    n = len(original)
    at = draw(st.integers(0, max(n - 1, 0)))
    kind = draw(st.sampled_from(["random", "truncate", "flip", "zeros", "non-utf8", "huge", "empty"]))
    if kind == "random":
        return draw(st.binary(max_size=4096))
    if kind == "truncate":
        return original[:at]
    if kind == "flip" and n:
        return original[:at] + bytes([original[at] ^ (1 << draw(st.integers(0, 7)))]) + original[at + 1 :]
    if kind == "zeros":
        length = draw(st.integers(1, 4096))
        return original[:at] + bytes(len(original[at : at + length])) + original[at + length :]
    if kind == "non-utf8":
        return original[:at] + draw(st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\xed\xa0\x80"])) + original[at:]
    if kind == "huge":
        return original + draw(st.binary(min_size=1, max_size=16)) * (1 << 20)  # megabytes of junk after it
    return b""


def run_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> int:
    """``fastcert ARGV`` in-process: an allowed exit status, and for an error exactly one line on stderr
    (no library warning either: the real command would print it)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(argv)
    err = capsys.readouterr().err
    assert code in OUTCOMES, (code, err)
    assert "Traceback" not in err
    if code == 2:
        assert err.startswith(f"fastcert {argv[0]}: error: ") and err.count("\n") == 1, err
        assert not caught, [str(w.message) for w in caught]
    return code


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def assert_whole(directory: Path) -> None:
    """Every file of a run directory that a run has finished with is complete; no temporary is left."""
    assert not [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]
    result = read_result(directory / RESULT_FILE)
    assert result["status"] in ("completed", "diverged")
    assert read_json(directory / SPEC_FILE)["spec_hash"] == validate(SPEC).hash()
    records = read_metrics(directory / METRICS_FILE)
    assert [record["epoch"] for record in records] == list(range(1, result["epochs_completed"] + 1))
    for name in (LAST_CHECKPOINT, BEST_CHECKPOINT):
        load_checkpoint(directory / name)


def spec_bytes() -> st.SearchStrategy[bytes]:
    valid = json.dumps(SPEC).encode()
    return st.one_of(
        st.binary(max_size=2048),
        st.text(max_size=200).map(lambda text: text.encode("utf-8", "surrogatepass")),
        st.integers(0, len(valid) - 1).map(lambda end: valid[:end]),  # a spec cut short
        damaged(valid).filter(lambda data: data != valid),
    )


@pytest.mark.parametrize("examples", EXAMPLES)
def test_train_with_any_bytes_as_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str], examples: int) -> None:
    @fuzz(examples)
    @given(data=spec_bytes())
    def check(data: bytes) -> None:
        work = Path(tempfile.mkdtemp(dir=tmp_path))
        spec, out = work / "run.yaml", work / "out"
        spec.write_bytes(data)
        code = run_cli(capsys, ["train", "--spec", str(spec), "--out", str(out), "--no-progress"])
        if code == 0:  # a flipped digit can still be a valid spec: then a whole run
            assert_whole(out)
        else:
            assert not out.exists()
        shutil.rmtree(work)

    check()


RUN_FILES = [SPEC_FILE, METRICS_FILE, RESULT_FILE, LAST_CHECKPOINT, BEST_CHECKPOINT]


@pytest.mark.parametrize("examples", EXAMPLES)
def test_train_resuming_a_directory_with_any_damaged_file(
    runs: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], examples: int
) -> None:
    spec_file, stopped, _ = runs

    @fuzz(examples)
    @given(name=st.sampled_from(RUN_FILES), data=st.data())
    def check(name: str, data: st.DataObject) -> None:
        out = Path(tempfile.mkdtemp(dir=tmp_path)) / "run"
        shutil.copytree(stopped, out)
        (out / name).write_bytes(data.draw(damaged((stopped / name).read_bytes()), label=name))
        before = snapshot(out)
        code = run_cli(capsys, ["train", "--spec", str(spec_file), "--out", str(out), "--no-progress"])
        if code == 2:
            assert snapshot(out) == before  # refused: nothing written, nothing lost
        else:
            assert_whole(out)
        shutil.rmtree(out.parent)

    check()


def test_a_torn_metrics_line_the_checkpoint_needs_is_one_error_line(
    runs: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by the fuzz: the torn-line warning came before the error, two lines on stderr."""
    spec_file, stopped, _ = runs
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    (out / METRICS_FILE).write_bytes(b"{")
    assert run_cli(capsys, ["train", "--spec", str(spec_file), "--out", str(out)]) == 2


def test_a_last_checkpoint_whose_weights_do_not_fit_is_refused_before_anything_is_written(
    runs: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found by the fuzz: a bit flip turned ``fc.bias`` into ``gc.bias`` inside the pickle; the checkpoint
    loads, and resuming failed in load_state_dict with a traceback."""
    spec_file, stopped, _ = runs
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    checkpoint = load_checkpoint(out / LAST_CHECKPOINT)
    checkpoint["model"]["gc.bias"] = checkpoint["model"].pop("fc.bias")
    torch.save(checkpoint, out / LAST_CHECKPOINT)
    before = snapshot(out)
    assert run_cli(capsys, ["train", "--spec", str(spec_file), "--out", str(out)]) == 2
    assert snapshot(out) == before


@pytest.mark.parametrize("examples", EXAMPLES)
def test_verify_with_any_damaged_checkpoint(
    runs: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], examples: int
) -> None:
    _, _, completed = runs
    original = (completed / BEST_CHECKPOINT).read_bytes()

    @fuzz(examples)
    @given(data=damaged(original), eps=st.sampled_from([None, "0", "0.05", "1", "nan", "-1", "inf", "1e999"]))
    def check(data: bytes, eps: str | None) -> None:
        work = Path(tempfile.mkdtemp(dir=tmp_path))
        checkpoint, out = work / "checkpoint.pt", work / "verify.json"
        checkpoint.write_bytes(data)
        argv = ["verify", "--checkpoint", str(checkpoint), "--method", "ibp", "--out", str(out)]
        code = run_cli(capsys, argv + ([] if eps is None else ["--eps", eps]))
        assert code in (0, 2)
        if code == 0:
            assert 0 <= read_json(out)["verified_err"] <= 1
        else:
            assert not out.exists()
        shutil.rmtree(work)

    check()


@pytest.mark.parametrize(
    ("command", "file", "damage"),
    [("train", "spec", lambda data: b"\xff\xfe" + data), ("verify", "checkpoint", lambda data: data[: len(data) // 3])],
    ids=["train-non-utf8-spec", "verify-truncated-checkpoint"],
)
def test_the_console_command_answers_damage_with_one_line(
    runs: tuple[Path, Path, Path], tmp_path: Path, command: str, file: str, damage: Any
) -> None:
    """The real entry point, as a user runs it: no warning or traceback of a library slips through."""
    spec_file, _, completed = runs
    source = spec_file if file == "spec" else completed / LAST_CHECKPOINT
    broken = tmp_path / source.name
    broken.write_bytes(damage(source.read_bytes()))
    out = tmp_path / "out"
    args = ["--spec", str(broken), "--out", str(out)] if command == "train" else ["--checkpoint", str(broken)]
    argv = [sys.executable, "-m", "fastcert.run.cli", command, *args] + (["--method", "ibp"] if file != "spec" else [])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"fastcert {command}: error: {broken}: ") and proc.stderr.count("\n") == 1
    assert not out.exists()
