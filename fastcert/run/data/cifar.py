"""CIFAR-10 from torchvision's python-pickle batches (``cifar-10-batches-py``) or its tarball.

Every batch file is md5-checked against torchvision's list before it is unpickled (unpickling runs
code, so only verified files are loaded), and a tarball is verified then extracted atomically.
"""

from __future__ import annotations

import pickle
import tarfile
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from fastcert.datasets import DATASETS
from fastcert.run.data.integrity import (
    DataIntegrityError,
    DatasetMissingError,
    publish,
    staging_dir,
    verify_md5,
)
from fastcert.run.data.splits import Split, TensorStore


class Layout(NamedTuple):
    """Where torchvision puts CIFAR-10 and what it downloads (read from torchvision itself)."""

    folder: str
    archive: str
    url: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str


@cache
def layout() -> Layout:
    """torchvision's CIFAR-10 file list, imported on first use: importing torchvision costs seconds
    that runs on MNIST or synthetic data (every smoke job) would otherwise pay at start-up."""
    from torchvision.datasets import CIFAR10

    return Layout(
        folder=CIFAR10.base_folder,
        archive=CIFAR10.filename,
        url=CIFAR10.url,
        train_files=tuple(name for name, _ in CIFAR10.train_list),
        test_files=tuple(name for name, _ in CIFAR10.test_list),
        meta_file=CIFAR10.meta["filename"],
    )


def _download_hint(root: Path) -> str:
    files = layout()
    return (
        f"Download it on a machine with internet: python -c 'import torchvision; "
        f'torchvision.datasets.CIFAR10("{root}", download=True)\' '
        f"and copy the resulting {files.folder} folder into {root}, "
        f"or put {files.archive} under {root} or in the mirror directory (FASTCERT_DATA_MIRROR)"
    )


def extract(archive: Path, root: Path) -> None:
    """Verify the tarball's md5, extract it beside ``root/<folder>``, check every file, publish."""
    folder = layout().folder
    verify_md5(archive, f"Delete {archive} and obtain it again. {_download_hint(root)}.")
    with staging_dir(root) as tmp:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as err:
            raise DataIntegrityError(f"{archive}: extraction failed ({err}). {_download_hint(root)}.") from err
        _verify_folder(tmp / folder, root)
        publish(tmp / folder, root / folder)


def _verify_folder(folder: Path, root: Path) -> None:
    files = layout()
    for name in files.train_files + files.test_files + (files.meta_file,):
        path = folder / name
        if not path.is_file():
            raise DataIntegrityError(f"{folder}: {name} is missing. {_download_hint(root)}.")
        verify_md5(path, f"Delete {folder} and obtain CIFAR-10 again. {_download_hint(root)}.")


def _read_batches(folder: Path, names: tuple[str, ...]) -> Split:
    spec = DATASETS["cifar10"]
    images, labels = [], []
    for name in names:
        try:
            with open(folder / name, "rb") as handle:
                batch = pickle.load(handle, encoding="latin1")
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, *spec.input_shape))
            labels.append(np.asarray(batch["labels"], dtype=np.int64))
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as err:
            raise DataIntegrityError(f"{folder / name}: not a CIFAR-10 batch ({err})") from err
    x, y = torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))
    if len(x) != len(y) or int(y.min()) < 0 or int(y.max()) >= spec.num_classes:
        raise DataIntegrityError(f"{folder}: {len(x)} images, {len(y)} labels or labels out of range")
    return Split(TensorStore(x), y, spec.mean, spec.std, spec.padding)


def _obtain(root: Path, mirror: Path | None, source: str) -> Path:
    files = layout()
    folder = root / files.folder
    if folder.is_dir():
        return folder
    candidates = [root / files.archive] + ([mirror / files.archive] if mirror is not None else [])
    for archive in candidates:
        if archive.is_file():
            extract(archive, root)
            return folder
    reason = ""
    if source == "torchvision":
        from torchvision.datasets.utils import download_url

        root.mkdir(parents=True, exist_ok=True)
        try:
            download_url(files.url, str(root), files.archive)
        except (OSError, RuntimeError) as err:  # URLError is an OSError
            reason = f" torchvision could not download it: {err}."
        else:
            extract(root / files.archive, root)
            return folder
    looked = " or ".join(str(path) for path in [folder] + candidates)
    raise DatasetMissingError(
        f"CIFAR-10 not found under {root} (expected {looked}).{reason} {_download_hint(root)}; "
        f"or run with data.source=synthetic for a clearly labelled stand-in."
    )


def load(root: Path, mirror: Path | None, source: str) -> tuple[Split, Split, str]:
    """Train and test splits (CPU); the source is always torchvision's format."""
    folder = _obtain(root, mirror, source)
    _verify_folder(folder, root)
    files = layout()
    return _read_batches(folder, files.train_files), _read_batches(folder, files.test_files), "torchvision"
