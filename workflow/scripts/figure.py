"""Snakemake script of rule ``figure``: draw one of the paper's figures as PDF and PNG.

Inputs: ``manifest`` (names the target and its runs); the run files are inputs only so that
Snakemake waits for them. Outputs: ``pdf`` and ``png``, byte-identical for identical inputs.
"""

import logging

from fastcert.collect import load_manifest
from fastcert.figures import draw, save

logging.basicConfig(filename=snakemake.log[0], filemode="w", level=logging.INFO, format="%(message)s")  # noqa: F821
try:
    manifest = load_manifest(snakemake.input.manifest)  # noqa: F821
    save(draw(manifest.target, manifest), {"pdf": snakemake.output.pdf, "png": snakemake.output.png})  # noqa: F821
    logging.info("wrote %s and %s from %d runs (scale %s)", snakemake.output.pdf, snakemake.output.png,  # noqa: F821
                 len(manifest.runs), manifest.scale)
except Exception:
    logging.exception("figure failed")
    raise
