"""`snakemake --lint`, failing only on findings not accepted on purpose.

Accepted (README, "Settings that differ"): "Specify a conda environment or container" for every rule,
because every rule runs in the fastcert environment itself (the workflow imports fastcert to parse, so
a per-rule environment would only duplicate it; environment.yml is there for conda users). Snakemake
has no switch to silence one lint, so this script reads its text report and exits 1 on anything else,
listing the new findings. Run it in the workflow's root (CI: the repository; tests: a copy).
"""

from __future__ import annotations

import re
import subprocess
import sys

ACCEPTED = frozenset({"Specify a conda environment or container for each rule."})


def findings(report: str) -> list[tuple[str, str]]:
    """(what, finding) for each finding of snakemake's text lint report; what is a rule or "snakefile"."""
    found, where = [], "?"
    for line in report.splitlines():
        if match := re.match(r"Lints for (?:rule )?(\S+)", line):
            where = match.group(1)
        elif match := re.match(r"    \* (.+?):?$", line):
            found.append((where, match.group(1)))
    return found


def main() -> int:
    lint = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if lint.returncode != 0 and not findings(lint.stdout):  # the workflow did not even parse
        print(lint.stdout, end="")
        return lint.returncode
    new = [(where, finding) for where, finding in findings(lint.stdout) if finding not in ACCEPTED]
    for where, finding in new:
        print(f"snakemake --lint: {where}: {finding}")
    return 1 if new else 0


if __name__ == "__main__":
    sys.exit(main())
