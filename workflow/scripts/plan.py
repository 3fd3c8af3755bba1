"""Snakemake script of rule ``plan``: what a scale will cost before anything is launched
(fastcert.pipeline.plan), written to ``results/plan.tsv`` and shown on the terminal."""

from typing import TYPE_CHECKING

from fastcert.pipeline.plan import Workstation, write_plan
from fastcert.pipeline.script_log import logged

if TYPE_CHECKING:  # Snakemake's script preamble defines it at run time
    from snakemake.iocontainers import snakemake

with logged(snakemake.log[0], "plan") as log:
    text = write_plan(
        list(snakemake.input.manifests),
        snakemake.params.device_hours,
        Workstation(**snakemake.params.workstation),
        snakemake.params.scale,
        snakemake.params.scale_description,
        snakemake.output[0],
    )
    summary = text.expandtabs(14)
    log.info("%s", summary.rstrip("\n"))
    print(summary, end="")
