"""Write one target's manifest (results/manifests/<target>.json): the scale, and for every run the
table/figure needs its row keys, repeat, run directory and resolved spec.

The document is computed by the workflow at parse time (common.smk) and arrives as a rule param, so
this script only writes it, atomically, without importing torch (a local job per target must stay
cheap).
"""

import json
from pathlib import Path
from typing import Any

from fastcert.io import atomic_write_text


def main(snakemake: Any) -> None:
    """Write the manifest and note its size in the log."""
    document = snakemake.params.document
    atomic_write_text(snakemake.output[0], json.dumps(document, indent=1) + "\n")
    Path(snakemake.log[0]).write_text(f"{snakemake.output[0]}: {len(document['runs'])} runs\n", encoding="utf-8")


if __name__ == "__main__":
    main(snakemake)
