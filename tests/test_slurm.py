"""Table 1 at the smoke scale through ``snakemake --profile slurm``, on a real SLURM (issue 7).

Dry runs cannot show that hundreds of GPU jobs survive a real scheduler, so these tests start a
single-node SLURM with fake GPUs on this machine (tests/slurm/cluster.sh, once per module, always
stopped again) and check, on a private copy of the workflow laid out like the repository root:

* every training run went through ``sbatch`` with ``--gpus=1`` (and the profile's partition and
  account), SLURM gave it a GPU, and the ``fastcert train`` process saw ``CUDA_VISIBLE_DEVICES``;
* the table is produced, and a second invocation submits nothing;
* ``scancel`` of a training job mid-run makes Snakemake retry it, the retry resumes from the
  run's checkpoint (metrics.jsonl records the resume) and the table equals the undisturbed one.

The profile under test is the user's ``slurm/config.yaml`` with its EDIT lines filled in as a user
would (partition, account), plus ``tests/slurm/profile`` for what only a scheduler without
accounting on one machine needs (squeue status, short polling). The cluster tests skip, naming the
reason, where SLURM cannot run (not root, packages not installable); CI runs them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self, TypeVar

import pytest
import yaml
from workflow_builders import REPO, copy_workflow

from fastcert.records import METRICS_FILE, RESULT_FILE, read_metrics, read_result

CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
TEST_PROFILE = REPO / "tests" / "slurm" / "profile"
TARGET = "results/smoke/table1.tex"
MANIFEST = "results/smoke/manifests/table1.json"
# What a user writes into the EDIT lines; the local cluster has a `gpu` partition and no
# accounting, so any account name is accepted.
SITE_LINES = {"slurm_partition": "gpu", "slurm_account": "fastcert-test"}
# Table 1 at the smoke scale: 3 models x 3 methods for MNIST and for each of the two CIFAR-10
# schedules, one repeat each (the paper's 5/3/3 repeats are capped at 1).
TABLE1_SMOKE_RUNS = 27
RUN_TIMEOUT_S = 1500
UNAVAILABLE = 2  # cluster.sh's exit status for "SLURM cannot run here"
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def with_site_lines(profile_text: str) -> str:
    """The user profile with its commented EDIT lines for partition and account filled in."""
    for key, value in SITE_LINES.items():
        profile_text, count = re.subn(
            rf"^(\s*)#\s*{key}:\s*\S+", rf"\g<1>{key}: {value}", profile_text, flags=re.MULTILINE
        )
        assert count == 1, f"slurm/config.yaml has no commented '{key}:' EDIT line"
    return profile_text


def make_workdir(path: Path) -> Path:
    """A copy of the workflow, its config and the user profile, as at the repository root."""
    copy_workflow(path, "slurm")
    profile = path / "slurm" / "config.yaml"
    profile.write_text(with_site_lines(profile.read_text()))
    return path


def snakemake_command(*extra: str) -> list[str]:
    """``snakemake --profile slurm`` for Table 1 at the smoke scale, with the test overrides."""
    profiles = ["--profile", "slurm", "--profile", str(TEST_PROFILE)]
    return [sys.executable, "-m", "snakemake", *profiles, "--verbose", *extra, "--config", "scale=smoke", "--", TARGET]


def job_environment() -> dict[str, str]:
    """The environment of the head process, exported to every job (sbatch --export=ALL)."""
    env = dict(os.environ)
    # One data root for all runs (MNIST is fetched once); the default of the README's command.
    env.setdefault("FASTCERT_DATA", str(REPO / "data"))
    return env


def training_runs(workdir: Path) -> set[str]:
    """Run ids of every training run Table 1 needs, from the workflow's manifest."""
    document = json.loads((workdir / MANIFEST).read_text())
    return {Path(entry["run_dir"]).name for entry in document["runs"]}


@dataclass
class Submission:
    """One ``sbatch`` call of the SLURM plugin, as logged with --verbose."""

    rule: str
    wildcards: str
    flags: str


def submissions(log: str) -> list[Submission]:
    """Every sbatch call in a Snakemake log (the plugin logs them at debug level)."""
    found = []
    for line in log.splitlines():
        if "sbatch call: sbatch " not in line:
            continue
        flags = line.split("--wrap=", 1)[0]
        comment = re.search(r"--comment '?rule_(\w+?)(?:_wildcards_(\S+?))?'?\s", flags)
        assert comment, f"sbatch call without the plugin's --comment: {line}"
        found.append(Submission(comment.group(1), comment.group(2) or "", flags))
    return found


def slurm_run_id(log: str) -> str:
    """The plugin names every job of one Snakemake invocation after this id."""
    match = re.search(r"SLURM run ID: (\S+)", log)
    assert match, "no 'SLURM run ID' in the Snakemake log"
    return match.group(1)


def slurm_jobs(name: str) -> list[dict[str, str]]:
    """SLURM's record of every job named ``name`` (finished ones included: MinJobAge=3600)."""
    out = subprocess.run(["scontrol", "--oneliner", "show", "job"], capture_output=True, text=True, check=True).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if fields.get("JobName") == name:
            jobs.append(fields)
    return jobs


def all_job_ids() -> set[str]:
    out = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%i"], capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


class TrainingProcesses:
    """Samples the environment of every ``fastcert train`` process started in one directory.

    The jobs run on this machine, so /proc shows what the training process itself received from
    SLURM; the rule's log holds only fastcert's own output. Each process lives for seconds
    (imports alone take longer than the sampling interval), so none is missed.
    """

    def __init__(self, workdir: Path, interval: float = 0.1) -> None:
        self.workdir = str(workdir.resolve())
        self.interval = interval
        self.seen: dict[str, dict[str, str]] = {}  # run id -> environment subset
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for proc in Path("/proc").iterdir():
                if proc.name.isdigit():
                    self._sample(proc)

    def _sample(self, proc: Path) -> None:
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if "train" not in argv or "--out" not in argv or not any(a.endswith("fastcert") for a in argv):
                return
            if os.readlink(proc / "cwd") != self.workdir:
                return
            raw = (proc / "environ").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError):
            return  # gone or not ours to read
        env = dict(item.split("=", 1) for item in raw if "=" in item)
        run_id = Path(argv[argv.index("--out") + 1]).name
        self.seen[run_id] = {k: env.get(k, "") for k in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}


@dataclass
class Invocation:
    """A finished ``snakemake`` call and what it left behind."""

    workdir: Path
    returncode: int
    log: str
    processes: dict[str, dict[str, str]] = field(default_factory=dict)

    def check(self) -> None:
        assert self.returncode == 0, f"snakemake failed ({self.returncode}):\n{self.log[-6000:]}"


@dataclass
class Disturbance:
    """The training run whose SLURM job was cancelled mid-training."""

    run_id: str
    job_id: str
    epochs_before_cancel: int


def invoke(
    workdir: Path, command: list[str], during: Callable[[subprocess.Popen], T] | None = None
) -> tuple[Invocation, T | None]:
    """Run ``command`` in ``workdir`` to its end, sampling the training processes' environments;
    ``during(process)`` runs meanwhile (if it fails, snakemake is stopped and cancels its jobs)."""
    log_path = workdir / f"snakemake-{len(list(workdir.glob('snakemake-*.log')))}.log"
    with TrainingProcesses(workdir) as processes, open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=workdir, env=job_environment(), stdout=log, stderr=subprocess.STDOUT)
        try:
            outcome = during(process) if during else None
            code = process.wait(timeout=RUN_TIMEOUT_S)
        except BaseException:
            process.terminate()  # snakemake then scancels its jobs
            process.wait(timeout=120)
            raise
    return Invocation(workdir, code, log_path.read_text(), processes.seen), outcome


def wait_for(condition: Callable[[], T], process: subprocess.Popen, what: str, timeout: float = RUN_TIMEOUT_S) -> T:
    """The first truthy value of ``condition()``, polled while ``process`` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process.poll() is not None:
            raise AssertionError(f"snakemake exited ({process.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def longest_runs(workdir: Path) -> list[str]:
    """The runs with the most epochs: long enough to be cancelled mid-way."""
    document = json.loads((workdir / MANIFEST).read_text())
    epochs = {Path(entry["run_dir"]).name: entry["spec"]["schedule"]["epochs"] for entry in document["runs"]}
    return sorted(run_id for run_id, n in epochs.items() if n == max(epochs.values()))


def first_trained(workdir: Path, run_ids: list[str]) -> tuple[str, int] | None:
    """The first of ``run_ids`` with a completed epoch, and its number of epochs, if any."""
    for run_id in run_ids:
        epochs = len(read_metrics(workdir / "runs" / run_id / METRICS_FILE))
        if epochs:
            return run_id, epochs
    return None


def running_job_of(run_id: str) -> str | None:
    """SLURM job id of the running training job of ``run_id``, if any."""
    out = subprocess.run(
        ["squeue", "--noheader", "--states=RUNNING", "--format=%i %k"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        job_id, _, comment = line.partition(" ")
        if comment.strip() == f"rule_train_wildcards_{run_id}":
            return job_id
    return None


def cancel_after_first_epoch(workdir: Path, process: subprocess.Popen) -> Disturbance:
    """Wait for one of the longest runs to finish an epoch under SLURM, then scancel its job.

    Taking whichever starts first keeps the retry early in the run, while other jobs still
    finish: the plugin polls SLURM 2 s after a job finished, but 10 s later after every poll
    that saw none, so a retry running alone at the end would wait minutes to be noticed.
    """
    wait_for((workdir / MANIFEST).exists, process, "the manifest")
    candidates = longest_runs(workdir)
    run_id, epochs = wait_for(lambda: first_trained(workdir, candidates), process, "a first epoch of a long run")
    job_id = wait_for(lambda: running_job_of(run_id), process, f"the SLURM job of {run_id}", timeout=30)
    subprocess.run(["scancel", job_id], check=True)
    return Disturbance(run_id, job_id, epochs)


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """A local SLURM for this module; stopped again whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("a local SLURM needs root (tests/slurm/cluster.sh starts munged, slurmctld, slurmd)")
    try:
        up = subprocess.run([str(CLUSTER), "up"], check=False, capture_output=True, text=True, timeout=900)
        if up.returncode == UNAVAILABLE:
            pytest.skip(up.stderr.strip())
        assert up.returncode == 0, f"cluster.sh up failed:\n{up.stdout}\n{up.stderr}"
        yield
    finally:
        subprocess.run([str(CLUSTER), "down"], check=False, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def table_run(cluster: None, tmp_path_factory: pytest.TempPathFactory) -> tuple[Invocation, Disturbance]:
    """Table 1 (smoke) through the SLURM profile, one training job cancelled after its first epoch
    (inside the full run rather than in a second one: see cancel_after_first_epoch)."""
    workdir = make_workdir(tmp_path_factory.mktemp("slurm") / "repo")
    run, disturbance = invoke(workdir, snakemake_command(), lambda process: cancel_after_first_epoch(workdir, process))
    run.check()
    assert disturbance is not None
    return run, disturbance


# ---------------------------------------------------------------------------------------------
# Without a cluster: the profile itself
# ---------------------------------------------------------------------------------------------


def test_user_profile_site_lines_are_the_commented_edit_lines() -> None:
    text = (REPO / "slurm" / "config.yaml").read_text()
    profile = yaml.safe_load(text)
    assert profile["executor"] == "slurm"
    assert not set(SITE_LINES) & set(profile["default-resources"]), "site values must be left to the user"
    for key in SITE_LINES:
        line = next(line for line in text.splitlines() if re.match(rf"\s*#\s*{key}:", line))
        assert "EDIT" in line, f"the {key} line does not say that it is to be edited"
    filled = yaml.safe_load(with_site_lines(text))["default-resources"]
    assert {key: filled[key] for key in SITE_LINES} == SITE_LINES


def test_profile_dry_run_from_repository_root_needs_no_cluster(tmp_path: Path) -> None:
    """`snakemake --profile slurm` resolves ./slurm and plans one GPU job per Table 1 run."""
    workdir = make_workdir(tmp_path / "repo")
    result = subprocess.run(
        snakemake_command("--dry-run"),
        check=False,
        cwd=workdir,
        env=job_environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    jobs = re.findall(r"^rule train:\n(?:\s+.*\n)*?\s+resources: (.*)$", result.stdout, flags=re.MULTILINE)
    assert len(jobs) == TABLE1_SMOKE_RUNS
    assert all(re.search(r"(^|, )gpu=1(,|$)", resources) for resources in jobs), jobs[:3]


# ---------------------------------------------------------------------------------------------
# Against the cluster
# ---------------------------------------------------------------------------------------------


@pytest.mark.slurm
def test_every_training_job_went_through_sbatch_with_one_gpu(
    table_run: tuple[Invocation, Disturbance],
) -> None:
    run, disturbance = table_run
    runs = training_runs(run.workdir)
    assert len(runs) == TABLE1_SMOKE_RUNS
    calls = [call for call in submissions(run.log) if call.rule == "train"]
    expected = sorted([*runs, disturbance.run_id])  # the cancelled run was submitted twice
    assert sorted(call.wildcards for call in calls) == expected
    for call in calls:
        assert re.search(r"\s--gpus=1(\s|$)", call.flags), call.flags
        assert re.search(rf"\s-p {SITE_LINES['slurm_partition']}\s", call.flags), call.flags
        assert re.search(rf"\s-A {SITE_LINES['slurm_account']}\s", call.flags), call.flags
    # SLURM's own record of this invocation's jobs: each asked for one GPU and completed.
    jobs = slurm_jobs(slurm_run_id(run.log))
    assert sorted(job["Comment"].removeprefix("rule_train_wildcards_") for job in jobs) == expected
    for job in jobs:
        assert job["TresPerJob"] == "gres:gpu:1", job
        cancelled = job["JobId"] == disturbance.job_id
        assert job["JobState"] == ("CANCELLED" if cancelled else "COMPLETED"), job


@pytest.mark.slurm
def test_every_training_process_saw_its_gpu(table_run: tuple[Invocation, Disturbance]) -> None:
    run, _ = table_run
    assert set(run.processes) == training_runs(run.workdir), "a training process was not observed"
    job_ids = {job["JobId"] for job in slurm_jobs(slurm_run_id(run.log))}
    for run_id, env in run.processes.items():
        assert re.fullmatch(r"[01]", env["CUDA_VISIBLE_DEVICES"]), (run_id, env)  # 2 fake GPUs
        assert env["SLURM_JOB_ID"] in job_ids, (run_id, env)


@pytest.mark.slurm
def test_table_is_produced(table_run: tuple[Invocation, Disturbance]) -> None:
    run, _ = table_run
    assert "\\begin{tabular" in (run.workdir / TARGET).read_text()
    for run_id in training_runs(run.workdir):
        result = read_result(run.workdir / "runs" / run_id / RESULT_FILE)
        assert result["status"] in ("completed", "diverged"), (run_id, result["status"])


@pytest.mark.slurm
def test_cancelled_training_job_is_retried_and_resumes_from_its_checkpoint(
    table_run: tuple[Invocation, Disturbance],
) -> None:
    run, disturbance = table_run
    assert f"SLURM-job '{disturbance.job_id}' failed, SLURM status is: 'CANCELLED'" in run.log
    run_dir = run.workdir / "runs" / disturbance.run_id
    metrics = read_metrics(run_dir / METRICS_FILE)
    epochs = [record["epoch"] for record in metrics]
    assert epochs == list(range(1, len(epochs) + 1)), "every epoch exactly once"
    resumed = [record["epoch"] for record in metrics if record["resumed"]]
    # the retry starts after the last checkpointed epoch: not from scratch, nothing skipped
    assert len(resumed) == 1 and resumed[0] > disturbance.epochs_before_cancel >= 1, resumed
    result = read_result(run_dir / RESULT_FILE)
    assert result["status"] == "completed" and result["epochs_completed"] == len(epochs)


@pytest.mark.slurm
def test_resumed_run_gives_the_undisturbed_table(table_run: tuple[Invocation, Disturbance], tmp_path: Path) -> None:
    """The cancelled run trained again without interruption (locally) yields the same table."""
    run, disturbance = table_run
    workdir = tmp_path / "undisturbed"
    shutil.copytree(run.workdir, workdir, ignore=shutil.ignore_patterns(".snakemake", "*.log"))
    shutil.rmtree(workdir / "runs" / disturbance.run_id)
    (workdir / TARGET).unlink()
    local, _ = invoke(
        workdir, [sys.executable, "-m", "snakemake", "--cores", "2", "--config", "scale=smoke", "--", TARGET]
    )
    local.check()
    assert list(local.processes) == [disturbance.run_id], "only the cancelled run is trained again"
    assert (workdir / TARGET).read_text() == (run.workdir / TARGET).read_text()


@pytest.mark.slurm
def test_second_invocation_submits_nothing(table_run: tuple[Invocation, Disturbance]) -> None:
    run, _ = table_run
    before = all_job_ids()
    again, _ = invoke(run.workdir, snakemake_command())
    again.check()
    assert "Nothing to be done" in again.log
    assert submissions(again.log) == [] and again.processes == {}
    assert all_job_ids() == before


@pytest.mark.slurm
def test_teardown_stops_only_its_own_daemons_and_removes_its_config(cluster: None, tmp_path: Path) -> None:
    """Runs last: `down` kills by PID file, never by name, and leaves no slurm.conf behind."""
    state = Path(os.environ.get("FASTCERT_SLURM_STATE", "/tmp/fastcert-slurm"))
    pids = {name: int((state / "run" / f"{name}.pid").read_text()) for name in ("munged", "slurmctld", "slurmd")}
    # What a kill by name would hit: a copy of `sleep` called slurmd.
    decoy_binary = tmp_path / "slurmd"
    shutil.copy2(shutil.which("sleep"), decoy_binary)
    decoy = subprocess.Popen([str(decoy_binary), "120"])
    try:
        down = subprocess.run([str(CLUSTER), "down"], check=False, capture_output=True, text=True, timeout=300)
        assert down.returncode == 0, down.stderr
        for name, pid in pids.items():
            assert not Path(f"/proc/{pid}").exists(), f"{name} (pid {pid}) still running"
        assert decoy.poll() is None, "cluster.sh down killed a process it did not start"
        assert not Path("/etc/slurm/slurm.conf").exists() and not Path("/etc/slurm/gres.conf").exists()
        assert sorted(p.name for p in state.iterdir()) == ["log"], "only the logs stay"
        again = subprocess.run([str(CLUSTER), "down"], check=False, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stderr
    finally:
        decoy.kill()
        decoy.wait()
