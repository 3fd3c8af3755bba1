"""TinyImageNet from the CS231n zip; the val split (sorted into class folders) is the test set.

The zip is md5-checked, extracted without its unlabelled ``test/`` part into a staging directory,
its val images are moved into ``val/<wnid>/`` following ``val_annotations.txt``, and only then is
``tiny-imagenet-200/`` renamed into place. At 100k JPEGs the data stays on disk and is decoded by
DataLoader workers; augmentation and normalization then run on the device like the other datasets.
Class indices follow sorted wnids (torchvision ``ImageFolder`` order, as the authors used).
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from fastcert.datasets import DATASETS
from fastcert.run.data.integrity import (
    DataIntegrityError,
    DatasetMissingError,
    publish,
    staging_dir,
    verify_md5,
)
from fastcert.run.data.splits import Split

FOLDER = "tiny-imagenet-200"
ARCHIVE = "tiny-imagenet-200.zip"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}
WORKERS = min(8, os.cpu_count() or 1)


class _ImageFiles(Dataset[Tensor]):
    """Decodes one image file to uint8 [3, H, W] (grayscale JPEGs converted to RGB)."""

    def __init__(self, paths: list[Path], size: int) -> None:
        self.paths, self.size = paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
        except OSError as err:
            raise DataIntegrityError(f"{path}: unreadable image ({err})") from err
        if pixels.shape != (self.size, self.size, 3):
            raise DataIntegrityError(f"{path}: image of shape {pixels.shape}, expected {self.size}x{self.size}")
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


class FolderStore:
    """Image files read by a DataLoader with workers, in the order the split asks for."""

    def __init__(self, paths: list[Path], size: int, workers: int = WORKERS) -> None:
        self.paths, self.size, self.workers = paths, size, workers

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Tensor) -> FolderStore:
        return FolderStore([self.paths[i] for i in indices.tolist()], self.size, self.workers)

    def to(self, device: torch.device) -> FolderStore:
        return self

    def load(self, order: Tensor, batch_size: int, device: torch.device) -> Iterator[Tensor]:
        loader = DataLoader(
            _ImageFiles(self.paths, self.size),
            batch_size=batch_size,
            sampler=order.tolist(),
            num_workers=self.workers,
            pin_memory=device.type == "cuda",
        )
        for images in loader:
            yield images.to(device, non_blocking=True)


def sort_val(folder: Path) -> None:
    """Move ``val/images/<file>`` to ``val/<wnid>/<file>`` per ``val_annotations.txt``.

    Each move is an ``os.replace`` and already-moved files are skipped, so an interrupted sort of a
    user's extracted copy simply continues on the next load.
    """
    val = folder / "val"
    images = val / "images"
    if not images.is_dir():
        return
    for wnid, name in _annotations(folder):
        target = val / wnid / name
        if target.exists():
            continue
        if not (images / name).is_file():
            raise DataIntegrityError(f"{images / name}: listed in val_annotations.txt but missing")
        target.parent.mkdir(exist_ok=True)
        os.replace(images / name, target)
    leftover = sorted(path.name for path in images.iterdir())
    if leftover:
        raise DataIntegrityError(f"{images}: files not in val_annotations.txt: {leftover[:5]}")
    images.rmdir()


def _annotations(folder: Path) -> list[tuple[str, str]]:
    path = folder / "val" / "val_annotations.txt"
    if not path.is_file():
        raise DataIntegrityError(f"{path} is missing: cannot tell the val images' classes")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 2:
            raise DataIntegrityError(f"{path}:{number}: expected 'file<TAB>wnid<TAB>...', got {line!r}")
        pairs.append((fields[1], fields[0]))
    return pairs


def _images_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def samples(folder: Path) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """(path, class index) for train and val, checking the layout is complete."""
    wnids_path = folder / "wnids.txt"
    if not wnids_path.is_file():
        raise DataIntegrityError(f"{wnids_path} is missing")
    wnids = sorted(set(wnids_path.read_text().split()))
    expected = DATASETS["tinyimagenet"].num_classes
    if len(wnids) != expected:
        raise DataIntegrityError(f"{wnids_path}: {len(wnids)} distinct wnids, expected {expected}")
    train: list[tuple[Path, int]] = []
    test: list[tuple[Path, int]] = []
    for label, wnid in enumerate(wnids):
        for split, part in ((train, "train"), (test, "val")):
            found = _images_under(folder / part / wnid)
            if not found:
                raise DataIntegrityError(f"{folder / part / wnid}: no images for class {wnid}")
            split.extend((path, label) for path in found)
    if (folder / "val" / "val_annotations.txt").is_file():
        annotated = len(_annotations(folder))
        if annotated != len(test):
            raise DataIntegrityError(
                f"{folder / 'val'}: {len(test)} images in class folders, val_annotations.txt lists {annotated}"
            )
    return train, test


def _download_hint(root: Path) -> str:
    return (
        f"Download {URL} (md5 90528d7ca1a48142e341f4ef8d21d0de) on a machine with internet and put "
        f"it under {root} or in the mirror directory (FASTCERT_DATA_MIRROR), or run with "
        f"data.source=tinyimagenet-zip where that URL is reachable"
    )


def extract(archive: Path, root: Path) -> None:
    """Verify the zip, extract train/val/wnids, sort val, check the layout, publish atomically."""
    verify_md5(archive, f"Delete {archive} and obtain it again. {_download_hint(root)}.")
    with staging_dir(root) as tmp:
        try:
            with zipfile.ZipFile(archive) as zipped:
                members = [m for m in zipped.namelist() if not m.startswith(f"{FOLDER}/test/")]
                zipped.extractall(tmp, members)
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise DataIntegrityError(f"{archive}: extraction failed ({err}). {_download_hint(root)}.") from err
        sort_val(tmp / FOLDER)
        samples(tmp / FOLDER)
        publish(tmp / FOLDER, root / FOLDER)


def _obtain(root: Path, mirror: Path | None, source: str) -> Path:
    folder = root / FOLDER
    if folder.is_dir():
        sort_val(folder)
        return folder
    candidates = [root / ARCHIVE] + ([mirror / ARCHIVE] if mirror is not None else [])
    for archive in candidates:
        if archive.is_file():
            extract(archive, root)
            return folder
    reason = ""
    if source == "tinyimagenet-zip":
        from torchvision.datasets.utils import download_url

        root.mkdir(parents=True, exist_ok=True)
        try:
            download_url(URL, str(root), ARCHIVE)
        except (OSError, RuntimeError) as err:
            reason = f" Downloading {URL} failed: {err}."
        else:
            extract(root / ARCHIVE, root)
            return folder
    looked = " or ".join(str(path) for path in [folder] + candidates)
    raise DatasetMissingError(
        f"TinyImageNet not found under {root} (expected {looked}).{reason} {_download_hint(root)}; "
        f"or run with data.source=synthetic for a clearly labelled stand-in."
    )


def _split(pairs: list[tuple[Path, int]]) -> Split:
    spec = DATASETS["tinyimagenet"]
    store = FolderStore([path for path, _ in pairs], spec.input_shape[1])
    labels = torch.tensor([label for _, label in pairs], dtype=torch.int64)
    return Split(store, labels, spec.mean, spec.std, spec.padding)


def load(root: Path, mirror: Path | None, source: str) -> tuple[Split, Split, str]:
    """Train and val (as test) splits over the prepared image folders."""
    train, test = samples(_obtain(root, mirror, source))
    return _split(train), _split(test), "tinyimagenet-zip"
