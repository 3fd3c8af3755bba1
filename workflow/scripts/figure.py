"""Snakemake script of rule ``figure``: draw one of the paper's figures as PDF and PNG.

Inputs: ``manifest`` (names the target and its runs), ``producers`` (the documents of
config/producers.yaml made for this figure: Figure 1's widths); the run files are inputs only so
that Snakemake waits for them. Outputs: ``pdf`` and ``png``, byte-identical for identical inputs.
"""

from typing import TYPE_CHECKING

from fastcert.pipeline.script_log import logged
from fastcert.reporting.collect import load_manifest, load_producer
from fastcert.reporting.figures import draw, save

if TYPE_CHECKING:  # Snakemake's script preamble defines it at run time
    from snakemake.iocontainers import snakemake

with logged(snakemake.log[0], "figure") as log:
    manifest = load_manifest(snakemake.input.manifest)
    producers = [load_producer(path) for path in snakemake.input.producers]
    save(draw(manifest.target, manifest, producers), {"pdf": snakemake.output.pdf, "png": snakemake.output.png})
    log.info(
        "wrote %s and %s from %d runs (scale %s)",
        snakemake.output.pdf,
        snakemake.output.png,
        len(manifest.runs),
        manifest.scale,
    )
