"""The workflow end to end at the `smoke` scale: real jobs, real outputs.

Table 5 needs no training; the check of how training-job exits are treated uses a fake `fastcert`
executable (nothing trained). Table 1 trains its 27 smoke runs and compiles the table with pdflatex
(about 2-3 minutes on 2 cores). Everything (all tables, figures and the report) is marked slow (run
with FASTCERT_SLOW=1): README states its measured time on 2 cores.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import stat
from pathlib import Path

import pytest
import yaml
from workflow_builders import copy_workflow, snakemake

from fastcert.records import RESULT_FILE, read_result
from fastcert.reporting.latex import compile_pdf, standalone_document

SMOKE = ("--config", "scale=smoke")
FAN_INS = (27, 576, 1152, 32768)
# n/2 * E|W| for each distribution over the fan-in n (Table 5's closed forms, derived here).
CLOSED_FORMS = {
    "Xavier (uniform)": lambda n: n / 2 * (1 / math.sqrt(n)) / 2,  # U(±a): E|W| = a/2
    "Xavier (Gaussian)": lambda n: n / 2 * math.sqrt(1 / n) * math.sqrt(2 / math.pi),  # N(0,s²): s·√(2/π)
    "Kaiming (uniform)": lambda n: n / 2 * math.sqrt(6 / n) / 2,
    "Kaiming (Gaussian)": lambda n: n / 2 * math.sqrt(2 / n) * math.sqrt(2 / math.pi),
    "IBP Initialization": lambda n: n / 2 * (math.sqrt(2 * math.pi) / n) * math.sqrt(2 / math.pi),
}


def run_smoke(workdir: Path, *targets: str, cores: str = "2", hang_guard_s: float = 1200) -> str:
    result = snakemake(workdir, "--cores", cores, *SMOKE, "--quiet", "rules", "--", *targets, hang_guard_s=hang_guard_s)
    assert result.returncode == 0, result.stdout
    return result.stdout


def table_groups(tex: str) -> dict[str, list[list[str]]]:
    """Rows of a generated table by group label (the italic \\multicolumn line before them)."""
    groups: dict[str, list[list[str]]] = {}
    current = None
    for line in tex.splitlines():
        if match := re.search(r"\\multicolumn\{\d+\}\{l\}\{\\textit\{(.+)\}\}", line):
            current = groups.setdefault(match.group(1), [])
        elif current is not None and "&" in line and line.rstrip().endswith("\\\\"):
            current.append([cell.strip() for cell in line.rstrip()[:-2].split("&")])
    return groups


def test_table5_gains_match_the_closed_forms(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    run_smoke(workdir, "results/smoke/table5.tex")
    manifest = json.loads((workdir / "results/smoke/manifests/table5.json").read_text())
    assert (manifest["scale"], manifest["runs"]) == ("smoke", [])
    # the gains are computed by the producer rule; the table only reads its document
    gains = json.loads((workdir / "results/producers/table5_gains.json").read_text())
    assert gains["producer"] == "table5_gains" and len(gains["rows"]) == 24
    groups = table_groups((workdir / "results/smoke/table5.tex").read_text())
    for method, closed_form in CLOSED_FORMS.items():
        (label,) = [label for label in groups if label.startswith(method)]
        rows = {int(cells[0].strip("$")): cells for cells in groups[label]}
        assert sorted(rows) == list(FAN_INS)
        for n, cells in rows.items():
            expected = closed_form(n)
            # columns: n, our closed form, our empirical mean of 100 trials, the paper's, delta
            assert cells[1] == f"{expected:.2f}", (method, n, cells)
            assert float(cells[2]) == pytest.approx(expected, rel=0.03), (method, n, cells)


def test_snakemake_html_report_embeds_the_generated_outputs(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    run_smoke(workdir, "results/smoke/table5.tex", "results/smoke/figures/figure1.png")
    (workdir / "reports" / "smoke").mkdir(parents=True)
    targets = ("results/smoke/table5.tex", "results/smoke/figures/figure1.png")
    result = snakemake(workdir, *SMOKE, "--report", "reports/smoke/snakemake-report.html", "--", *targets)
    assert result.returncode == 0, result.stdout
    html = (workdir / "reports/smoke/snakemake-report.html").read_text()
    for output in targets:
        embedded = base64.b64encode((workdir / output).read_bytes()).decode()
        assert embedded in html, f"{output} is not embedded in the HTML report"


@pytest.mark.pdflatex
def test_table1_end_to_end_compiles_with_pdflatex(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    run_smoke(workdir, "results/smoke/table1.tex")
    manifest = json.loads((workdir / "results/smoke/manifests/table1.json").read_text())
    run_dirs = {entry["run_dir"]: entry["key"]["dataset"] for entry in manifest["runs"]}
    assert len(run_dirs) == 27  # 3 datasets/schedules x 3 models x 3 methods, 1 repeat
    for run_dir, dataset in run_dirs.items():
        result = read_result(workdir / run_dir / RESULT_FILE)
        assert result["status"] in ("completed", "diverged"), run_dir
        assert result["data"]["synthetic"] is (dataset != "MNIST"), run_dir
    tex = (workdir / "results/smoke/table1.tex").read_text()
    assert "smoke" in tex
    pdf = tmp_path / "table1.pdf"
    compile_pdf(standalone_document(tex), pdf)
    assert pdf.read_bytes().startswith(b"%PDF")


def fake_fastcert(bin_dir: Path) -> None:
    """A `fastcert` that diverges (exit 3 after writing a diverged result) for CIFAR-10 runs and
    crashes (exit 1, no result) for the others, in milliseconds."""
    bin_dir.mkdir()
    script = bin_dir / "fastcert"
    script.write_text(
        "#!/bin/sh\n"
        'out="$5"\n'
        'case "$out" in\n'
        '  *cifar10*) echo \'{"status": "diverged"}\' > "$out/result.json"; echo "fake: diverged"; exit 3 ;;\n'
        '  *) echo "fake: crashed"; exit 1 ;;\n'
        "esac\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_diverged_run_completes_its_job_and_a_crash_fails_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = copy_workflow(tmp_path / "wf")
    run_smoke(workdir, "results/smoke/manifests/figure7.json", "results/smoke/manifests/table9.json", cores="1")
    figure7 = json.loads((workdir / "results/smoke/manifests/figure7.json").read_text())["runs"]
    table9 = json.loads((workdir / "results/smoke/manifests/table9.json").read_text())["runs"]
    crashing = figure7[0]["run_dir"]  # TinyImageNet
    diverging = next(e["run_dir"] for e in table9 if e["key"]["dataset"] == "CIFAR-10")
    fake_fastcert(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    result = snakemake(
        workdir,
        "--cores",
        "1",
        *SMOKE,
        "--keep-going",
        "--",
        f"{crashing}/result.json",
        f"{diverging}/result.json",
    )
    assert result.returncode != 0  # the crash fails its job (after the retries) ...
    assert not (workdir / crashing / RESULT_FILE).exists()
    # ... while the divergence is a result: its job succeeds and the spec it was given is on disk
    assert read_result(workdir / diverging / RESULT_FILE)["status"] == "diverged"
    log = (workdir / "logs/train" / f"{Path(diverging).name}.log").read_text()
    assert "fake: diverged" in log and "kept as a result" in log
    spec = yaml.safe_load((workdir / diverging / "spec.yaml").read_text())
    assert (spec["dataset"], spec["data"]["source"], spec["width"]) == ("cifar10", "synthetic", 0.0625)


@pytest.mark.slow
@pytest.mark.pdflatex
def test_every_table_figure_and_the_report_at_smoke_scale(tmp_path: Path) -> None:
    workdir = copy_workflow(tmp_path)
    run_smoke(workdir, hang_guard_s=3600)  # 7-10 min on 2 cores (README); CI has 90 min in all
    for n in range(1, 11):
        assert (workdir / f"results/smoke/table{n}.tex").stat().st_size > 0
    for n in (1, 2, 3, 4, 6, 7):
        for ext in ("pdf", "png"):
            assert (workdir / f"results/smoke/figures/figure{n}.{ext}").stat().st_size > 0
    assert (workdir / "reports/smoke/report.pdf").read_bytes().startswith(b"%PDF")
    page = (workdir / "reports/smoke/report.html").read_text(encoding="utf-8")
    assert all(f'<table id="table{n}">' in page for n in range(1, 11)) and page.count("data:image/png;base64,") == 6
