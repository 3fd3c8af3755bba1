"""Snakemake script of rule ``verification_table``: render results/verification.md from Table 1's
manifest, each run's ``fastcert verify`` JSON (input ``verifications``) and the paper's numbers."""

from pathlib import Path
from typing import TYPE_CHECKING

from fastcert.io import atomic_write_text, read_json
from fastcert.pipeline.script_log import logged
from fastcert.reporting.collect import load_manifest
from fastcert.reporting.tables import load_paper
from fastcert.reporting.verification import verification_table

if TYPE_CHECKING:  # Snakemake's script preamble defines it at run time
    from snakemake.iocontainers import snakemake

with logged(snakemake.log[0], "verification table") as log:
    manifest = load_manifest(snakemake.input.manifest)
    verifications = {Path(path).stem: read_json(path) for path in snakemake.input.verifications}
    atomic_write_text(
        snakemake.output[0], verification_table(manifest, verifications, load_paper(snakemake.input.paper))
    )
    log.info("wrote %s from %d verifications", snakemake.output[0], len(verifications))
