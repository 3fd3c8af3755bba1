"""Snakemake script of rule ``produce``: compute one producer of config/producers.yaml (numbers that
need no data and no training, fastcert.method.analysis) into ``results/producers/<name>.json``.

The tables and figures that show these numbers read that file; they never compute them.
"""

from typing import TYPE_CHECKING

import torch

from fastcert.io import atomic_write_json
from fastcert.method.analysis import produce
from fastcert.pipeline.script_log import logged

if TYPE_CHECKING:  # Snakemake's script preamble defines it at run time
    from snakemake.iocontainers import snakemake

with logged(snakemake.log[0], "producer") as log:
    torch.set_num_threads(snakemake.threads)
    document = produce(
        snakemake.wildcards.producer,
        snakemake.params.declaration,
        where=snakemake.params.where,
    )
    atomic_write_json(snakemake.output[0], document)
    log.info("wrote %s: %d rows", snakemake.output[0], len(document["rows"]))
