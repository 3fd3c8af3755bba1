"""Issue 12's settings, as the paper-scale workflow resolves them, and their variants: an edit of
config/experiments.yaml that changes one of these specs must change this file too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from workflow_builders import EXPERIMENTS, PAPER

from fastcert.pipeline.errors import ExperimentError
from fastcert.pipeline.experiments import expand_targets, manifest_document
from fastcert.pipeline.scales import scale_root

REPO = Path(__file__).resolve().parents[1]


def specs(target: str, variants: tuple[str, ...] = (), **key: Any) -> list[dict[str, Any]]:
    """The resolved paper-scale specs of a target's rows whose key has these values."""
    expansion = expand_targets(EXPERIMENTS, PAPER, "paper", "experiments.yaml", variants)
    found = [e["spec"] for e in expansion.manifests[target] if all(e["key"].get(k) == v for k, v in key.items())]
    assert found, f"{target} has no row with {key}"
    return found


def test_wide_resnet_baselines_keep_the_authors_constructor_init_and_ours_uses_ibp() -> None:
    for method in ("Vanilla IBP", "CROWN-IBP"):
        for spec in specs("table1", model="Wide-ResNet", method=method):
            assert spec["init"] == "default" and spec["regularizers"] == []
    assert {s["init"] for s in specs("table1", model="Wide-ResNet", method="Ours")} == {"ibp"}
    varied = specs("table1", ("wrn-baseline-init",), model="Wide-ResNet", method="Vanilla IBP")
    assert {s["init"] for s in varied} == {"xavier_uniform"}
    assert {s["init"] for s in specs("table1", ("wrn-baseline-init",), model="CNN-7", method="Vanilla IBP")} == {
        "default"
    }


def test_wrn_baseline_init_variant_leaves_the_tinyimagenet_baselines_alone() -> None:
    """Issue 22 §3: TinyImageNet's Wide-ResNet baselines use the default init already; the variant
    re-runs the 18 MNIST/CIFAR-10 baseline runs only (before the dataset filter it also re-ran the 2
    TinyImageNet ones, detaching Table 7's timings from Table 2's runs)."""
    plain = expand_targets(EXPERIMENTS, PAPER, "paper", "experiments.yaml")
    varied = expand_targets(EXPERIMENTS, PAPER, "paper", "experiments.yaml", ("wrn-baseline-init",))
    new = set(varied.runs) - set(plain.runs)
    assert len(new) == 18 and len(varied.runs) == len(plain.runs)
    assert {varied.runs[rid].dataset for rid in new} == {"mnist", "cifar10"}
    tiny = specs("table7", ("wrn-baseline-init",), dataset="TinyImageNet", model="Wide-ResNet")
    assert {s["init"] for s in tiny if s["method"] != "ours"} == {"default"}


def test_tinyimagenet_follows_the_papers_text_and_the_readme_recipe_is_a_variant() -> None:
    for spec in specs("table2"):
        assert (spec["lambda0"], spec["grad_accumulation"], spec["batch_size"]) == (0.1, 1, 128)
        assert spec["schedule"]["milestones"] == [60, 70] and spec["schedule"]["epochs"] == 80
    for spec in specs("table2", ("tinyimagenet-recipe",)):
        assert (spec["lambda0"], spec["grad_accumulation"]) == (0.2, 2)
        assert spec["schedule"]["milestones"] == [61, 71] and spec["schedule"]["epochs"] == 80


def test_table9_mnist_trains_50_epochs_and_cifar_160() -> None:
    for spec in specs("table9", dataset="MNIST"):
        assert spec["schedule"] == {"start": 1, "length": 20, "epochs": 50, "milestones": [40, 45]}
    assert {s["schedule"]["epochs"] for s in specs("table9", dataset="CIFAR-10")} == {160}
    varied = specs("table9", ("table9-mnist-epochs",), dataset="MNIST")
    assert {(s["schedule"]["epochs"], tuple(s["schedule"]["milestones"])) for s in varied} == {(70, (50, 60))}


def test_figure6_has_no_batchnorm_and_shares_table4_row1() -> None:
    assert {(s["method"], s["bn"]) for s in specs("figure6")} == {("vanilla", "none")}
    expansion = expand_targets(EXPERIMENTS, PAPER, "paper", "experiments.yaml")
    row1 = {
        e["run_dir"]
        for e in expansion.manifests["table4"]
        if e["key"]["config"] == 1 and e["key"]["schedule_total"] == 70 and e["repeat"] == 0
    }
    assert row1 <= set(expansion.run_dirs("figure6"))
    assert {s["bn"] for s in specs("figure6", ("figure6-bn",))} == {"full"}


def test_figure2_uses_the_70_epoch_runs_and_table6_rows_3_and_4() -> None:
    assert {s["schedule"]["epochs"] for s in specs("figure2")} == {70}
    assert {s["schedule"]["epochs"] for s in specs("figure2", ("figure2-schedule",))} == {160}
    plain = {(s["method"], s["init"], tuple(s["regularizers"])) for s in specs("table6")}
    assert plain == {("vanilla", "default", ()), ("ours", "ibp", ())}
    varied = {(s["method"], s["init"], tuple(s["regularizers"])) for s in specs("table6", ("table6-statistic",))}
    assert varied == {("ours", "default", ("tightness", "relu")), ("ours", "ibp", ("tightness", "relu"))}


def test_variants_change_only_their_targets_rows() -> None:
    plain = expand_targets(EXPERIMENTS, PAPER, "paper", "experiments.yaml")
    varied = expand_targets(EXPERIMENTS, PAPER, "paper", "experiments.yaml", ("figure6-bn",))
    assert set(varied.runs) - set(plain.runs)  # the variant's runs are new runs ...
    for target in plain.manifests:  # ... and no other target moves
        if target != "figure6":
            assert plain.run_dirs(target) == varied.run_dirs(target), target
    assert [e["key"] for e in plain.manifests["figure6"]] == [e["key"] for e in varied.manifests["figure6"]]


def test_an_unknown_or_idle_variant_is_an_error_naming_it() -> None:
    with pytest.raises(ExperimentError, match=r"unknown variant 'figure6-nb' \(did you mean 'figure6-bn'\?\)"):
        expand_targets(EXPERIMENTS, PAPER, "paper", "experiments.yaml", ("figure6-nb",))
    demo = {**PAPER, "only": {"table1": [{"dataset": "MNIST", "model": "CNN-7"}]}}
    with pytest.raises(ExperimentError, match="figure6-bn changes no run"):
        expand_targets(EXPERIMENTS, demo, "demo", "experiments.yaml", ("figure6-bn",))


def test_manifests_name_the_differences_of_their_target_and_which_choice_ran() -> None:
    expansion = expand_targets(EXPERIMENTS, PAPER, "paper", "experiments.yaml", ("figure6-bn",))
    figure6 = manifest_document(expansion, "figure6", "paper", PAPER)["differences"]
    declared = EXPERIMENTS["differences"]["figure6-bn"]
    # the whole declaration, so that the report explains it from the manifests alone
    assert figure6 == [
        {
            "name": "figure6-bn",
            "setting": declared["setting"],
            "variant": True,
            "kind": declared["kind"],
            "paper": declared["paper"],
            "default": declared["default"],
            "evidence": " ".join(declared["evidence"].split()),
            "variant_description": declared["variant"]["description"],
            "targets": declared["targets"],
        }
    ]
    table2 = manifest_document(expansion, "table2", "paper", PAPER)["differences"]
    assert [(d["name"], d["variant"]) for d in table2] == [("l-std", False), ("tinyimagenet-recipe", False)]
    assert "differences" not in manifest_document(expansion, "table5", "paper", PAPER)


def test_every_difference_names_existing_targets() -> None:
    for name, difference in EXPERIMENTS["differences"].items():
        assert set(difference["targets"]) <= set(EXPERIMENTS["targets"]), name


def test_variants_have_their_own_output_folders() -> None:
    assert scale_root("results", "paper") == "results"
    assert scale_root("results", "paper", ["figure6-bn"]) == "results/figure6-bn"
    assert (
        scale_root("reports", "smoke", ["figure6-bn", "table9-mnist-epochs"])
        == "reports/smoke+figure6-bn+table9-mnist-epochs"
    )


def test_ours_trains_without_l_std_and_the_camera_ready_default_is_a_variant() -> None:
    """Issue 22 §3: L_tightness + L_relu (the code tied to the printed numbers, and Eq. 10); the
    camera-ready commit's default, L_std on too, is the variant `l-std`, for every Ours row that uses
    the two regularizers and for no other row."""
    assert {tuple(s["regularizers"]) for s in specs("table1", method="Ours")} == {("tightness", "relu")}
    varied = specs("table1", ("l-std",), method="Ours")
    assert {tuple(s["regularizers"]) for s in varied} == {("tightness", "relu", "std")}
    plain_rows = {tuple(s["regularizers"]) for s in specs("table4")}
    varied_rows = {tuple(s["regularizers"]) for s in specs("table4", ("l-std",))}
    assert varied_rows == (plain_rows - {("tightness", "relu")}) | {("tightness", "relu", "std")}
    assert {tuple(s["regularizers"]) for s in specs("table1", ("l-std",), method="Vanilla IBP")} == {()}
