"""Snakemake script of rule ``table``: render one of the paper's tables (``results/tableN.tex``).

Inputs: ``manifest`` (names the target and its runs), ``paper`` (config/paper_results.yaml),
``producers`` (the documents of config/producers.yaml made for this table, e.g. Table 5's gains); the
run files are inputs only so that Snakemake waits for them. ``config["tables"]["checkpoint"]``
(validated, its default filled by workflow/schemas/config.schema.yaml) picks which checkpoint's errors are tabulated.
"""

from typing import TYPE_CHECKING

from fastcert.io import read_json
from fastcert.pipeline.script_log import logged
from fastcert.reporting.tables import render_target

if TYPE_CHECKING:  # Snakemake's script preamble defines it at run time
    from snakemake.iocontainers import snakemake

with logged(snakemake.log[0], "table") as log:
    target = read_json(snakemake.input.manifest)["target"]
    table = render_target(
        target,
        paper_path=snakemake.input.paper,
        manifest_path=snakemake.input.manifest,
        tex_path=snakemake.output[0],
        checkpoint=snakemake.config["tables"]["checkpoint"],
        producer_paths=list(snakemake.input.producers),
    )
    log.info("wrote %s: %d rows, scale %s, data: %s", snakemake.output[0], len(table.rows), table.scale, table.data)
