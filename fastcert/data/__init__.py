"""Datasets as researchers get them: MNIST, CIFAR-10, TinyImageNet, subsets and synthetic stand-ins.

Modules: ``catalog`` (constants, :class:`DatasetInfo`), ``integrity`` (md5 tables, errors, atomic
extraction), ``mnist`` / ``cifar`` / ``tinyimagenet`` / ``synthetic`` (one per source format),
``augment`` (on-device flip + edge-padded crop), ``splits`` (:class:`Split`, subsets) and
``loading`` (:func:`load_dataset`).
"""

from fastcert.data.catalog import DATASETS, DatasetInfo
from fastcert.data.integrity import DataIntegrityError, DatasetMissingError
from fastcert.data.loading import SOURCES, data_root, load_dataset, mirror_dir
from fastcert.data.splits import Split

__all__ = [
    "DATASETS",
    "SOURCES",
    "DataIntegrityError",
    "DatasetInfo",
    "DatasetMissingError",
    "Split",
    "data_root",
    "load_dataset",
    "mirror_dir",
]
