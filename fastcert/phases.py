"""The epoch arithmetic of an ε schedule (where the ramp ends, how many epochs each phase has).

Why a module without torch or the method code: the method's schedule, the run spec's checks, the
workflow's scales and estimates, and the reports (which never import the method) all count epochs
from the same ``start``/``length``/``epochs`` fields, and must count them the same way.
"""

from __future__ import annotations


def ramp_end(start: int, length: int) -> int:
    """The last epoch of the ε ramp that starts in 1-based epoch ``start`` and lasts ``length`` epochs:
    the warmup's last epoch (regularizers on); ε is at ε_max from the first batch of the next one."""
    return start + length - 1


def phase_counts(start: int, length: int, epochs: int) -> tuple[int, int, int]:
    """Epochs at ε = 0, on the ramp and at the target ε of a schedule (run-spec ``schedule`` fields)."""
    return start - 1, length, epochs - ramp_end(start, length)
