"""The names of the files in a run directory (``runs/<run id>/``), without torch.

Why a module of its own: the run's lifecycle (:mod:`fastcert.run.lifecycle`) writes them, and the
workflow names them as rule inputs and outputs while Snakemake parses, where importing torch would
cost seconds per parse.
"""

from __future__ import annotations

SPEC_FILE = "spec.json"  # the resolved spec and its hash, written by the run
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
LAST_CHECKPOINT = "checkpoint_last.pt"
BEST_CHECKPOINT = "checkpoint_best.pt"
RUN_LOCK_FILE = "run.lock"  # held by the one process writing the directory (fastcert.locks)
REQUESTED_SPEC_FILE = "spec.yaml"  # the spec the workflow hands to `fastcert train --spec`
CHECKPOINTS = ("best", "last")  # the checkpoints a run keeps, also the keys of its result.json
# the checkpoint whose errors tables and the report show by default (the authors' choice); the config schema's
# tables.checkpoint default, which a test keeps equal to it
DEFAULT_CHECKPOINT = "best"
