"""Snakemake script of rule ``verify_checkpoint``: ``fastcert verify`` of a run's best checkpoint, or, for
a run with no model to verify (diverged, interrupted, no best checkpoint), the document that says why
(:func:`fastcert.reporting.verification.skipped`). A diverged run is a final result of the workflow, so
its verification succeeds too, and the verification table names it instead of the job failing."""

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fastcert.io import atomic_write_json
from fastcert.pipeline.script_log import logged
from fastcert.records import BEST_CHECKPOINT
from fastcert.reporting.verification import SKIPPED, skipped

if TYPE_CHECKING:  # Snakemake's script preamble defines it at run time
    from snakemake.iocontainers import snakemake

with logged(snakemake.log[0], "verification") as log:
    run_dir = Path(snakemake.input.result).parent
    document = skipped(run_dir)
    if document is not None:
        atomic_write_json(snakemake.output[0], document)
        log.info("%s: the run %s; not verified", run_dir, document[SKIPPED])
    else:
        size = snakemake.params.test_size
        command = [
            *(sys.executable, "-m", "fastcert.run.cli", "verify"),
            *("--checkpoint", str(run_dir / BEST_CHECKPOINT), "--verifier", snakemake.params.verifiers),
            *("--out", snakemake.output[0]),
            *(() if size is None else ("--test-size", str(size))),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        log.info("%s\n%s%s", " ".join(command), done.stdout, done.stderr)
        if done.returncode != 0:
            raise RuntimeError(f"fastcert verify exited with status {done.returncode}: {done.stderr.strip()}")
