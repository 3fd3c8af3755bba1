"""Snakemake script of rule ``manifest``: write one target's manifest (results/manifests/<target>.json):
the scale, and for every run the table/figure needs its row keys, repeat, run directory and resolved spec.

The document is computed by the workflow at parse time (common.smk) and arrives as a rule param, so
this script only writes it, atomically, without importing torch (a local job per target must stay
cheap).
"""

import json
from typing import TYPE_CHECKING

from fastcert.io import atomic_write_text
from fastcert.pipeline.script_log import logged

if TYPE_CHECKING:  # Snakemake's script preamble defines it at run time
    from snakemake.iocontainers import snakemake

with logged(snakemake.log[0], "manifest") as log:
    document = snakemake.params.document
    atomic_write_text(snakemake.output[0], json.dumps(document, indent=1) + "\n")
    log.info("%s: %d runs", snakemake.output[0], len(document["runs"]))
