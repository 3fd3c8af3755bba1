"""Snakemake script of rule ``verification_table``: render results/verification.md from Table 1's
manifest, each run's ``fastcert verify`` JSON (input ``verifications``) and the paper's numbers."""

import logging
from pathlib import Path

from fastcert.io import atomic_write_text, read_json
from fastcert.reporting.collect import load_manifest
from fastcert.reporting.tables import load_paper
from fastcert.reporting.verification import verification_table

logging.basicConfig(filename=snakemake.log[0], filemode="w", level=logging.INFO, format="%(message)s")
try:
    manifest = load_manifest(snakemake.input.manifest)
    verifications = {Path(path).stem: read_json(path) for path in snakemake.input.verifications}
    paper = load_paper(snakemake.input.paper)
    atomic_write_text(snakemake.output[0], verification_table(manifest, verifications, paper))
    logging.info("wrote %s from %d verifications", snakemake.output[0], len(verifications))
except Exception:
    logging.exception("verification table failed")
    raise
