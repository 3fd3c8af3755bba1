"""Snakemake script of rule ``report_pdf``: compile ``reports/report.pdf`` with every table and
figure and the summary of where the reproduction agrees with the paper.

Inputs: ``tables`` (results/tableN.tex), ``figures`` (PDFs named figureN.pdf), ``manifests`` (one
per table and figure), ``producers`` (results/producers/*.json), ``paper``,
``scales`` (config/scales.yaml: what each scale shows and costs). Needs pdflatex (TeX Live).
"""

import logging

from fastcert.reporting.report import build_report

logging.basicConfig(filename=snakemake.log[0], filemode="w", level=logging.WARNING, format="%(message)s")  # noqa: F821
log = logging.getLogger("fastcert.workflow")  # INFO for our lines only (fontTools is chatty at INFO)
log.setLevel(logging.INFO)
try:
    summaries = build_report(
        tables=list(snakemake.input.tables),  # noqa: F821
        figures=list(snakemake.input.figures),  # noqa: F821
        manifests=list(snakemake.input.manifests),  # noqa: F821
        producers=list(snakemake.input.producers),  # noqa: F821
        paper_path=snakemake.input.paper,  # noqa: F821
        scales_path=snakemake.input.scales,  # noqa: F821
        experiments_path=snakemake.input.experiments,  # noqa: F821
        output=snakemake.output[0],  # noqa: F821
        checkpoint=snakemake.config["tables"]["checkpoint"],  # noqa: F821
    )
    for s in summaries:
        log.info("%s: %d agree, %d disagree, %d without ours, %d not compared",
                     s.name, s.agree, s.disagree, s.without_ours, s.not_compared)
except Exception:
    log.exception("report failed")
    raise
