"""The log of a workflow script (workflow/scripts/*.py): one file per job, its failure written there.

Snakemake runs each script in a process of its own and shows the job's ``log:`` file when the job
fails, so the traceback must be in that file; our own lines are kept at INFO while other libraries
only add warnings (fontTools, for one, is chatty at INFO).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

LOGGER = "fastcert.workflow"


@contextmanager
def logged(log_path: str, what: str) -> Iterator[logging.Logger]:
    """Log to ``log_path`` (overwritten) for the duration; an exception is logged as ``<what> failed``
    with its traceback and raised again, so Snakemake still marks the job failed."""
    handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    log = logging.getLogger(LOGGER)
    log.setLevel(logging.INFO)
    try:
        yield log
    except Exception:
        log.exception("%s failed", what)
        raise
    finally:
        root.removeHandler(handler)
        handler.close()
