"""The workflow scripts' log (fastcert.pipeline.script_log): our lines and a failure's traceback land in
the job's log file, the failure still fails the job, and other libraries' chatter stays out."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fastcert.pipeline.script_log import logged


def test_lines_go_to_the_log_file_which_each_job_overwrites(tmp_path: Path) -> None:
    log_file = tmp_path / "table1.log"
    log_file.write_text("from an earlier attempt\n")
    with logged(str(log_file), "table") as log:
        log.info("wrote %s: %d rows", "results/table1.tex", 9)
        logging.getLogger("fontTools.subset").info("chatty library line")
        logging.getLogger("matplotlib").warning("a library's warning")
    assert log_file.read_text() == "wrote results/table1.tex: 9 rows\na library's warning\n"


def test_a_failure_is_logged_with_its_traceback_and_raised_again(tmp_path: Path) -> None:
    log_file = tmp_path / "figure1.log"
    with pytest.raises(KeyError, match="manifest"), logged(str(log_file), "figure"):
        raise KeyError("manifest")
    text = log_file.read_text()
    assert text.startswith("figure failed\nTraceback (most recent call last):")
    assert text.rstrip().endswith("KeyError: 'manifest'")
    logging.getLogger("fastcert.workflow").info("after the job")
    assert "after the job" not in log_file.read_text()  # the file handler is gone with the block
