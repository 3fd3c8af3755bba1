"""Report: agreement counts per table, and the whole LaTeX report compiling with pdflatex."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from run_builders import epoch_record, write_manifest, write_run

from fastcert.io import load_yaml
from fastcert.pipeline.experiments import target_differences
from fastcert.reporting.collect import load_manifest
from fastcert.reporting.figures import draw, save
from fastcert.reporting.report import build_report, summarize
from fastcert.reporting.tables import build_target, load_paper, render_target

ROOT = Path(__file__).resolve().parents[1]
PAPER_PATH = ROOT / "config" / "paper_results.yaml"
SCALES = load_yaml((ROOT / "config" / "scales.yaml").read_text(encoding="utf-8"))
# the settings that differ from the paper as the workflow's manifests carry them, figure2's variant chosen
DIFFERENCES = target_differences(
    load_yaml((ROOT / "config" / "experiments.yaml").read_text(encoding="utf-8")), ["figure2-schedule"]
)
FIGURE2_SETTING = "Figure 2 (ReLU states during training): the schedule"
NOTE = "Smoke scale: these numbers test the plumbing only."
CIFAR160 = {"dataset": "CIFAR-10", "schedule_total": 160, "schedule_phases": [1, 80, 79], "model": "CNN-7"}


def _table1_manifest(root: Path) -> Path:
    """Ours: 3 runs (standard agrees, verified is 0.42 off against a std of 0.32; the best run agrees);
    Vanilla IBP: diverged."""
    entries = []
    for i, (standard, verified) in enumerate([(0.51, 0.66), (0.52, 0.65), (0.53, 0.67)]):
        write_run(root / f"runs/o{i}", standard=standard, verified=verified)
        entries.append(({**CIFAR160, "method": "Ours"}, f"runs/o{i}"))
    write_run(root / "runs/v", status="diverged")
    entries.append(({**CIFAR160, "method": "Vanilla IBP"}, "runs/v"))
    return write_manifest(root / "results/manifests/table1.json", "table1", entries, differences=DIFFERENCES["table1"])


def _table3_manifest(root: Path) -> Path:
    write_run(root / "runs/t", epoch_time={"eps0": 3.0, "ramp": 6.0, "target": 5.0})
    key = {"dataset": "CIFAR-10", "model": "CNN-7", "method": "Ours"}
    return write_manifest(root / "results/manifests/table3.json", "table3", [(key, "runs/t")])


def test_summary_counts_agreements(tmp_path):
    paper = load_paper(PAPER_PATH)
    table1 = build_target("table1", paper, load_manifest(_table1_manifest(tmp_path), tmp_path))
    summary = summarize(table1)
    # 33 printed rows x 2 values: Ours standard agrees, Ours verified does not, Ours (best) agrees
    # twice; the 62 others (diverged Vanilla IBP included) have no number of ours.
    assert (summary.agree, summary.disagree, summary.without_ours, summary.not_compared) == (3, 1, 62, 0)
    (only,) = summary.disagreements
    assert (only.ours, only.paper, only.delta) == ("66.00", r"65.58$\pm$0.32", "+0.42")
    assert "CNN-7" in only.row and only.rule == "outside the paper's $\\pm$ std"

    table3 = build_target("table3", paper, load_manifest(_table3_manifest(tmp_path), tmp_path))
    timing = summarize(table3)
    assert (timing.agree, timing.disagree, timing.without_ours, timing.not_compared) == (0, 0, 0, 12)
    assert timing.tolerance == "not compared"


def _inputs(root: Path) -> dict:
    manifests = [_table1_manifest(root), _table3_manifest(root)]
    tables = []
    for manifest in manifests:
        tex = root / "results" / f"{manifest.stem}.tex"
        render_target(manifest.stem, paper_path=PAPER_PATH, manifest_path=manifest, tex_path=tex, root=root)
        tables.append(tex)
    metrics = [epoch_record(e, "ramp", active=0.1 * e) for e in (1, 2, 3)]
    write_run(root / "runs/f", metrics=metrics)
    figure_manifest = write_manifest(
        root / "results/manifests/figure2.json",
        "figure2",
        [({"setting": "Vanilla IBP"}, "runs/f")],
        scale_note=NOTE,
        differences=DIFFERENCES["figure2"],
    )
    figure = root / "results/figures/figure2.pdf"
    save(draw("figure2", load_manifest(figure_manifest, root)), {"pdf": str(figure)})
    return {"tables": tables, "figures": [figure], "manifests": [*manifests, figure_manifest]}


@pytest.mark.pdflatex
def test_report_compiles_with_tables_figures_and_summary(tmp_path):
    output = tmp_path / "reports" / "report.pdf"
    summaries = build_report(
        **_inputs(tmp_path),
        paper_path=PAPER_PATH,
        output=output,
        root=tmp_path,
        scales=SCALES,
    )
    assert [s.name for s in summaries] == ["table1", "table3"]
    assert output.read_bytes().startswith(b"%PDF")
    assert not list(output.parent.glob("*.tmp"))
    if not shutil.which("pdftotext"):
        return
    text = subprocess.run(["pdftotext", "-layout", str(output), "-"], capture_output=True, text=True, check=True).stdout
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "Where the reproduction agrees with the paper" in text
    assert any(line.startswith("Table 1 3 1 62 0 ±1 synthetic CIFAR-10") for line in lines), lines[:60]
    assert any(line.startswith("Table 3 0 0 0 12 not compared") for line in lines)  # numbered as in the paper
    assert any("66.00 65.58±0.32 +0.42 outside the paper’s ±" in line for line in lines), lines
    assert "The paper’s Figure 2, regenerated" in text and "The paper:" in text
    assert "Table 3: Training time of CNN-7 on CIFAR-10" in text
    assert "smoke (a test scale)" in text
    # the scale's note, boxed on the first page and first in the caption of the figure made from runs
    assert NOTE in " ".join(lines[:40])
    assert "Figure 2: Smoke scale: these numbers test the plumbing only. The paper’s Figure 2" in " ".join(lines)
    # what the other scales take and show, from config/scales.yaml (smoke, this report's, starred)
    assert any(line.startswith("smoke \u22c6 smoke test") for line in lines), lines[:40]
    assert any("226 runs, about 650" in line for line in lines) and "43.6 minutes" in " ".join(lines)
    # the settings that differ from the paper's text that concern the report's tables and figures, from
    # their manifests, with the choice this report's runs made, and the figure's caption pointing there
    joined = " ".join(lines)
    section = joined[joined.index("Settings that differ from the paper Where") :]
    for setting in ("Initialization of the Wide-ResNet baselines", FIGURE2_SETTING):
        assert setting in section, setting
    assert "TinyImageNet: lambda0" not in section and "Table 9 (other radii)" not in section  # not among them
    assert section.count("This report ran the variant.") == 1
    assert "kaiming_normal_(mode=’fan_out’)" in section or "kaiming_normal_(mode='fan_out')" in section
    assert (
        "Settings that differ from the paper’s text (report, “Settings that differ from the paper”): "
        "The warmup regularizers of Ours: whether L_std = ReLU(tau - std(c))/tau is added to L_tightness + "
        f"L_relu (default l-std); {FIGURE2_SETTING} (variant figure2-schedule)" in joined
    )


def test_report_needs_a_manifest_per_table(tmp_path):
    inputs = _inputs(tmp_path)
    inputs["manifests"] = inputs["manifests"][1:]
    with pytest.raises(ValueError, match="no manifest for table1"):
        build_report(**inputs, paper_path=PAPER_PATH, output=tmp_path / "r.pdf", root=tmp_path)


def test_a_scale_without_cost_is_named(tmp_path):
    scales = {"paper": {"description": "full", "shows": "everything"}}
    with pytest.raises(ValueError, match=r"scales: scale 'paper' lacks cost"):
        build_report(
            **_inputs(tmp_path), paper_path=PAPER_PATH, output=tmp_path / "r.pdf", root=tmp_path, scales=scales
        )


def test_checkpoint_gap_measures_best_against_last_over_distinct_completed_runs(tmp_path):
    """Issue 22 §3: the report states how far the test-set-chosen best checkpoint lies from the last."""
    from fastcert.reporting.report import checkpoint_gap

    write_run(tmp_path / "runs/a", verified=0.70, last=(0.5, 0.73))
    write_run(tmp_path / "runs/b", verified=0.60, last=(0.5, 0.61))
    write_run(tmp_path / "runs/c", status="diverged", verified=0.1, last=(0.5, 0.9))
    key = {"dataset": "CIFAR-10", "schedule_total": 160, "schedule_phases": [1, 80, 79], "model": "CNN-7"}
    entries = [
        ({**key, "method": m}, f"runs/{r}") for m, r in (("Ours", "a"), ("Vanilla IBP", "b"), ("CROWN-IBP", "c"))
    ]
    manifest = load_manifest(write_manifest(tmp_path / "m/table1.json", "table1", entries), tmp_path)
    twice = load_manifest(write_manifest(tmp_path / "m/table7.json", "table7", entries[:1]), tmp_path)
    gap = checkpoint_gap([manifest, twice])
    assert gap is not None and gap.runs == 2  # run a counted once, the diverged run c not at all
    assert gap.mean == pytest.approx(2.0) and gap.largest == pytest.approx(3.0)
    assert checkpoint_gap([]) is None
