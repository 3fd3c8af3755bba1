"""`fastcert status` (fastcert.pipeline.status) on a smoke-scale run tree written in the documented schema:
a completed, a diverged, a killed (epochs but no result), a training (run lock held) and a missing run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from run_builders import epoch_record, write_manifest, write_run

from fastcert.locks import FileLock
from fastcert.pipeline.status import State, campaign, render
from fastcert.records import METRICS_FILE, RUN_LOCK_FILE

REPO = Path(__file__).resolve().parents[1]
PHASES = (1, 3, 6)  # 10 epochs
KEY = {"method": "Ours"}


def write_metrics(run_dir: Path, epochs: int, seconds: float) -> None:
    run_dir.mkdir(parents=True)
    records = [{**epoch_record(e, "ramp"), "epoch_time": seconds} for e in range(1, epochs + 1)]
    (run_dir / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def tree(tmp_path: Path):
    """runs/{done,diverged,killed,training,missing} in table1, runs/{done,missing} in table9, a plan."""
    write_run(tmp_path / "runs" / "done", total_time=3600.0)
    write_run(tmp_path / "runs" / "diverged", status="diverged", total_time=360.0)
    write_metrics(tmp_path / "runs" / "killed", 2, 600.0)
    write_metrics(tmp_path / "runs" / "training", 3, 600.0)
    names = ["done", "diverged", "killed", "training", "missing"]
    manifests = tmp_path / "results" / "smoke" / "manifests"
    write_manifest(manifests / "table1.json", "table1", [(KEY, f"runs/{n}") for n in names], phases=PHASES)
    write_manifest(manifests / "table9.json", "table9", [(KEY, "runs/done"), (KEY, "runs/missing")], phases=PHASES)
    rows = [
        "target\truns\town\tshared\tdevice_hours",
        "table1\t5\t3\t2\t5.00",
        "table9\t2\t0\t2\t2.00",
        "all\t5\t5\t0\t5.00",
    ]
    plan = "# a plan\n" + "\n".join(rows) + "\n"
    (tmp_path / "results" / "smoke" / "plan.tsv").write_text(plan)
    lock = FileLock(tmp_path / "runs" / "training" / RUN_LOCK_FILE, note="training")
    assert lock.try_acquire()
    yield tmp_path
    lock.release()


def test_each_run_is_counted_in_its_state_with_hours_against_the_plan(tree: Path) -> None:
    table1, table9, everything = campaign("smoke", tree)
    assert [t.target for t in (table1, table9, everything)] == ["table1", "table9", "all"]
    assert {run.run_dir.rsplit("/", 1)[1]: run.state for run in table1.runs} == {
        "done": State.COMPLETED,
        "diverged": State.DIVERGED,
        "killed": State.FAILED,
        "training": State.TRAINING,
        "missing": State.NOT_STARTED,
    }
    assert [table9.count(state) for state in State] == [1, 0, 0, 0, 1]
    assert table1.hours_spent == pytest.approx((3600 + 360 + 1200 + 1800) / 3600)
    assert table1.planned_hours == 5.0 and len(everything.runs) == 5
    training = next(run for run in table1.runs if run.state == State.TRAINING)
    assert (training.epochs_done, training.epochs, training.seconds_left) == (3, 10, 7 * 600.0)


def test_the_report_has_a_bar_and_counts_per_target_and_the_runs_in_training(tree: Path) -> None:
    text = render("smoke", campaign("smoke", tree))
    lines = text.splitlines()
    assert lines[0] == "campaign at scale 'smoke': runs completed / training / failed / diverged / not started"
    assert lines[1].startswith("table1  [#####>>>>>!!!!!xxxxx....]    5 runs: 1 / 1 / 1 / 1 / 1")
    assert lines[1].endswith("device-hours 1.93 of 5.00")
    assert lines[2].startswith("table9  [############............]    2 runs: 1 / 0 / 0 / 0 / 1")
    assert lines[-2:] == ["training:", f"  {tree / 'runs' / 'training'}: epoch 3/10, 1.2 h left"]


def test_the_command_imports_no_torch_and_says_where_manifests_are_missing(tree: Path) -> None:
    code = (
        "import sys; from fastcert.run.cli import main; status = main(['status', '--scale', 'smoke']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(status)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    shown = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True, text=True, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "table1" in shown.stdout and "training:" in shown.stdout
    missing = subprocess.run(
        [sys.executable, "-c", code.replace("smoke", "cpu")], cwd=tree, capture_output=True, text=True, env=env
    )
    assert missing.returncode == 2
    assert "results/cpu/manifests: no manifests; write them with" in missing.stderr


def test_targets_without_runs_at_the_scale_are_named_once_not_drawn_as_empty_bars(tree: Path) -> None:
    manifests = tree / "results" / "smoke" / "manifests"
    write_manifest(manifests / "figure1.json", "figure1", [], phases=PHASES)
    write_manifest(manifests / "table5.json", "table5", [], phases=PHASES)
    lines = render("smoke", campaign("smoke", tree)).splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["table1", "table9", "all"]
    assert lines[4] == "no training runs at this scale: figure1, table5"
    assert not any(line.startswith(("figure1 ", "table5 ")) for line in lines)
