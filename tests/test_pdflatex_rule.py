"""The rule for tests that compile LaTeX (tests/conftest.py), run in a pytest of its own with pdflatex
taken off PATH: skipped with the install line on a machine without TeX Live, failed under CI=true."""

from __future__ import annotations

from pathlib import Path

import pytest
from workflow_builders import REPO, path_without

COMPILING_TEST = """
import pytest


@pytest.mark.pdflatex
def test_compiles():
    pass
"""


def run_without_pdflatex(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str | None
) -> pytest.RunResult:
    """The suite's conftest and one compiling test, in a pytest subprocess whose PATH lacks pdflatex."""
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(COMPILING_TEST)
    monkeypatch.setenv("PATH", path_without("pdflatex", tmp_path / "bin"))
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")


@pytest.mark.parametrize("ci", [None, "false"])
def test_without_pdflatex_a_compiling_test_skips_with_the_install_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str | None
) -> None:
    result = run_without_pdflatex(pytester, monkeypatch, tmp_path, ci)
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*pdflatex is not on PATH (install it: Debian/Ubuntu: sudo apt-get install texlive*"])


def test_without_pdflatex_under_ci_a_compiling_test_fails(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    result = run_without_pdflatex(pytester, monkeypatch, tmp_path, "true")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pdflatex is not on PATH, and CI=true: CI must install TeX Live*"])


@pytest.mark.pdflatex  # the rule itself decides where this one runs
def test_with_pdflatex_the_compiling_test_runs(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text())
    pytester.makepyfile(COMPILING_TEST)
    monkeypatch.setenv("CI", "true")
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
