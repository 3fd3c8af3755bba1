"""External programs the workflow's rules need, checked before any job starts.

Why before: without pdflatex the report is the last job of the DAG, so a missing TeX Live would
otherwise surface after hours of training. The check runs once the DAG is known and only for the
rules that will actually run, so a plan, a dry run or a table needs no TeX Live.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable

from fastcert.pipeline.errors import ExperimentError

# rule -> programs its job runs
RULE_PROGRAMS = {"report_pdf": ("pdflatex",)}
INSTALL = {
    "pdflatex": (
        "Debian/Ubuntu: sudo apt-get install texlive-latex-base texlive-latex-recommended texlive-latex-extra "
        "texlive-fonts-recommended lmodern\n"
        "conda: conda install -c conda-forge texlive-core"
    ),
}


def missing_programs(rules: Iterable[str]) -> dict[str, list[str]]:
    """Programs not on PATH that the given rules' jobs need, with the rules that need each."""
    missing: dict[str, list[str]] = {}
    for rule in sorted(set(rules)):
        for program in RULE_PROGRAMS.get(rule, ()):
            if shutil.which(program) is None:
                missing.setdefault(program, []).append(rule)
    return missing


def require_programs(rules: Iterable[str]) -> None:
    """Raise, with the install lines, if a program that one of the rules to run needs is missing."""
    missing = missing_programs(rules)
    if missing:
        lines = [
            f"{program} is not on PATH, and rule {', '.join(needing)} needs it. Install it:\n{INSTALL[program]}"
            for program, needing in missing.items()
        ]
        raise ExperimentError("\n".join(lines))
