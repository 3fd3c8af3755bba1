"""Suite-wide test policy, so that the default suite stays within ~15 minutes on 2 CPU cores.

* ``@pytest.mark.slow`` tests run only with ``FASTCERT_SLOW=1``;
* ``@pytest.mark.cuda`` tests run only where CUDA is available (``pytest -m cuda``);
* ``@pytest.mark.slurm`` tests (a real local SLURM cluster, Table 1 through ``--profile slurm``)
  run only with ``FASTCERT_SLURM=1``; ``.ci/run`` runs them after the default suite;
* ``@pytest.mark.pdflatex`` tests (they compile LaTeX) skip, naming the install line, where pdflatex is
  missing (README: TeX Live is needed only for the PDF report), but fail under ``CI=true``: CI installs
  TeX Live, so a skip there would hide a broken report;
* ``@pytest.mark.chromium`` tests (the report page in a browser) likewise, with Chromium.
"""

from __future__ import annotations

import os
import shutil

import pytest

from fastcert.pipeline.tools import INSTALL
from fastcert.reporting.latex import pdflatex_available

pytest_plugins = ["pytester"]  # tests/test_pdflatex_rule.py runs this policy in a pytest of its own

OPT_IN = {
    "slow": ("FASTCERT_SLOW", "slow: set FASTCERT_SLOW=1 to run"),
    "slurm": ("FASTCERT_SLURM", "local SLURM cluster test: set FASTCERT_SLURM=1 to run (needs root)"),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for marker, (variable, reason) in OPT_IN.items():
        if os.environ.get(variable) == "1":
            continue
        skip = pytest.mark.skip(reason=reason)
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.cuda`` tests need a GPU: skipped without one (torch imported only for them);
    ``@pytest.mark.pdflatex`` and ``chromium`` tests need that program: skipped without it, failed
    without it in CI (which installs both)."""
    programs = {
        "pdflatex": (pdflatex_available, "TeX Live", "; ".join(INSTALL["pdflatex"].splitlines())),
        "chromium": (lambda: shutil.which("chromium") is not None, "Chromium", "sudo apt-get install chromium"),
    }
    for program, (available, package, install) in programs.items():
        if program in item.keywords and not available():
            if os.environ.get("CI") == "true":
                message = f"{program} is not on PATH, and CI=true: CI must install {package} ({install})"
                pytest.fail(message, pytrace=False)
            pytest.skip(f"{program} is not on PATH (install it: {install})")
    if "cuda" in item.keywords:
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA GPU")
