"""Datasets as researchers get them: MNIST, CIFAR-10, TinyImageNet, subsets and synthetic stand-ins.

Modules: ``integrity`` (md5 tables, errors, atomic extraction), ``mnist`` / ``cifar`` /
``tinyimagenet`` / ``synthetic`` (one per source format), ``augment`` (on-device flip + edge-padded
crop), ``splits`` (:class:`Split`, subsets) and ``loading`` (:func:`load_dataset`). What each dataset
is (shapes, sizes, sources, :class:`~fastcert.datasets.DatasetInfo`) is :mod:`fastcert.datasets`,
without torch.
"""

from __future__ import annotations

from fastcert.run.data.integrity import DataIntegrityError, DatasetMissingError
from fastcert.run.data.loading import data_root, load_dataset, mirror_dir
from fastcert.run.data.splits import Split

__all__ = ["DataIntegrityError", "DatasetMissingError", "Split", "data_root", "load_dataset", "mirror_dir"]
