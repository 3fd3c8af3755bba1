"""Snakemake script of rule ``report_pdf``: compile ``reports/report.pdf`` with every table and
figure and the summary of where the reproduction agrees with the paper.

Inputs: ``tables`` (results/tableN.tex), ``figures`` (PDFs named figureN.pdf), ``manifests`` (one
per table and figure), ``producers`` (results/producers/*.json), ``paper``; ``params.scales``: what each scale of
config/scales.yaml runs, shows and costs. Needs pdflatex (TeX Live).
"""

from typing import TYPE_CHECKING

from fastcert.pipeline.script_log import logged
from fastcert.reporting.report import build_report

if TYPE_CHECKING:  # Snakemake's script preamble defines it at run time
    from snakemake.iocontainers import snakemake

with logged(snakemake.log[0], "report") as log:
    summaries = build_report(
        tables=list(snakemake.input.tables),
        figures=list(snakemake.input.figures),
        manifests=list(snakemake.input.manifests),
        producers=list(snakemake.input.producers),
        paper_path=snakemake.input.paper,
        scales=snakemake.params.scales,
        output=snakemake.output[0],
        checkpoint=snakemake.config["tables"]["checkpoint"],
    )
    for s in summaries:
        log.info(
            "%s: %d agree, %d disagree, %d without ours, %d not compared",
            s.name,
            s.agree,
            s.disagree,
            s.without_ours,
            s.not_compared,
        )
