"""The exit statuses of the ``fastcert`` command and the error a user can fix (:class:`RunError`).

Torch-free, so that ``fastcert --help`` prints the contract without importing torch; the run
directory (:mod:`fastcert.run.lifecycle`) and the command line (:mod:`fastcert.run.cli`) take the
numbers from here, and docs/architecture.md repeats them.
"""

from __future__ import annotations

EXIT_COMPLETED = 0
EXIT_ERROR = 1  # an unexpected error (Python's own exit status for an uncaught exception)
EXIT_USAGE = 2  # invalid spec/arguments/files, a directory of another spec or writer, no such device/dataset
EXIT_DIVERGED = 3
EXIT_SIGNAL_BASE = 128  # interrupted by signal N: 128 + N (SIGTERM 143, SIGINT 130)
EXIT_CODES_HELP = """exit status:
  0    completed (also when DIR already holds the completed run: nothing is retrained)
  1    unexpected error (traceback on stderr)
  2    invalid spec or arguments, DIR unusable (a file, not writable), holding another spec's
       run or being trained by another live process (named; --wait waits for it), a damaged
       file in DIR (named, with what to do), or the device or dataset is not available; one
       line on stderr, DIR left as it was found (nothing was trained)
  3    training diverged (NaN/inf loss; reason in DIR/result.json; rerunning does not retrain)
  143  stopped by SIGTERM after saving the last completed epoch; rerun the same command to resume
  130  stopped by SIGINT (Ctrl-C), likewise"""
VERIFY_EXIT_CODES_HELP = """exit status:
  0    written
  2    missing, damaged or foreign checkpoint (missing from a run that diverged or stopped
       without it: the run directory and why), bad arguments, unwritable --out, or the device
       or dataset is not available; one line on stderr"""


class RunError(Exception):
    """A run (or verification) that must not start or continue as asked; the message names the
    file or value and says what to do."""
