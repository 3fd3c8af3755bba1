"""Snakemake script of rule ``report_html``: ``reports/report.html``, the report as one self-contained page.

Inputs: ``figures`` (PNGs named figureN.png, embedded), ``manifests`` (one per table and figure; the
tables are rebuilt from them and the runs they name), ``producers`` (results/producers/*.json),
``paper``, ``plan`` (plan.tsv); ``params.scales``: what each scale runs, shows and costs. Needs no TeX.
"""

from typing import TYPE_CHECKING

from fastcert.pipeline.script_log import logged
from fastcert.reporting.report import build_html_report

if TYPE_CHECKING:  # Snakemake's script preamble defines it at run time
    from snakemake.iocontainers import snakemake

with logged(snakemake.log[0], "report_html") as log:
    summaries = build_html_report(
        figures=list(snakemake.input.figures),
        manifests=list(snakemake.input.manifests),
        producers=list(snakemake.input.producers),
        paper_path=snakemake.input.paper,
        plan=snakemake.input.plan,
        scales=snakemake.params.scales,
        output=snakemake.output[0],
        checkpoint=snakemake.config["tables"]["checkpoint"],
    )
    log.info("wrote %s: %d tables, %d figures", snakemake.output[0], len(summaries), len(snakemake.input.figures))
