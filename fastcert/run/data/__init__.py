"""Datasets as researchers get them: MNIST, CIFAR-10, TinyImageNet, subsets and synthetic stand-ins.

Modules: ``catalog`` (constants, sources, :class:`DatasetInfo`; no torch), ``integrity`` (md5
tables, errors, atomic extraction), ``mnist`` / ``cifar`` / ``tinyimagenet`` / ``synthetic`` (one
per source format), ``augment`` (on-device flip + edge-padded crop), ``splits`` (:class:`Split`,
subsets) and ``loading`` (:func:`load_dataset`).

The names below are imported from their module on first use, so that ``fastcert.run.data.catalog`` can
be read (by run-spec validation while Snakemake parses the workflow) without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DATASETS": "catalog",
    "SOURCES": "catalog",
    "DatasetInfo": "catalog",
    "DataIntegrityError": "integrity",
    "DatasetMissingError": "integrity",
    "Split": "splits",
    "data_root": "loading",
    "load_dataset": "loading",
    "mirror_dir": "loading",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fastcert.run.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"fastcert.run.data.{module}"), name)
