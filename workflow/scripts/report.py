"""Snakemake script of rule ``report_pdf``: compile ``reports/report.pdf`` with every table and
figure and the summary of where the reproduction agrees with the paper.

Inputs: ``tables`` (results/tableN.tex), ``figures`` (PDFs named figureN.pdf), ``manifests`` (one
per table and figure), ``producers`` (results/producers/*.json), ``paper``; ``params.scales``: what each scale of
config/scales.yaml runs, shows and costs. Needs pdflatex (TeX Live).
"""

import logging

from fastcert.reporting.report import build_report

logging.basicConfig(filename=snakemake.log[0], filemode="w", level=logging.WARNING, format="%(message)s")
log = logging.getLogger("fastcert.workflow")  # INFO for our lines only (fontTools is chatty at INFO)
log.setLevel(logging.INFO)
try:
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
except Exception:
    log.exception("report failed")
    raise
