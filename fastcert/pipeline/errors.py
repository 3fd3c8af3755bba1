"""The one exception type of the experiment engine."""

from __future__ import annotations


class ExperimentError(ValueError):
    """A config, experiments or scales entry that cannot be expanded; the message names the file/key."""
