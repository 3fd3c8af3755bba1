"""A missing pdflatex stops the workflow before its first job, with the install lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from workflow_builders import copy_workflow, path_without, snakemake

from fastcert.pipeline.errors import ExperimentError
from fastcert.pipeline.tools import missing_programs, require_programs


def test_only_rules_that_run_pdflatex_need_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", path_without("pdflatex", tmp_path / "bin"))
    assert missing_programs(["train", "table", "plan"]) == {}
    assert missing_programs(["train", "report_pdf"]) == {"pdflatex": ["report_pdf"]}
    with pytest.raises(ExperimentError, match="pdflatex is not on PATH, and rule report_pdf needs it") as error:
        require_programs(["report_pdf"])
    assert "apt-get install texlive-latex-base texlive-latex-recommended" in str(error.value)
    assert "conda install -c conda-forge texlive-core" in str(error.value)


def test_report_without_pdflatex_fails_before_any_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workdir = copy_workflow(tmp_path / "wf")
    monkeypatch.setenv("PATH", path_without("pdflatex", tmp_path / "bin"))
    dry = snakemake(workdir, "--dry-run", "--config", "scale=smoke", "--", "reports/smoke/report.pdf")
    assert dry.returncode == 0, dry.stdout  # a dry run runs nothing, so it needs no TeX Live
    result = snakemake(workdir, "--cores", "1", "--config", "scale=smoke", "--", "reports/smoke/report.pdf")
    assert result.returncode != 0
    assert "pdflatex is not on PATH, and rule report_pdf needs it" in result.stdout
    assert "apt-get install texlive-latex-base" in result.stdout
    assert not (workdir / "runs").exists() and not (workdir / "results").exists()  # not one job ran
