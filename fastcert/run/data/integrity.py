"""Checksums, errors and atomic extraction shared by every source.

A dataset on disk is either complete and verified or absent: archives are md5-checked before use,
and extraction happens in a temporary sibling directory that is renamed into place only once it is
complete, so an interrupted or failed extraction never leaves a half dataset that a later run would
trust.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

from fastcert.io import atomic_write, default_mode


@cache
def known_md5() -> dict[str, str]:
    """Expected md5 per file name. MNIST's and CIFAR-10's come from torchvision's own lists (the
    files torchvision downloads), imported on first use: torchvision costs seconds at start-up;
    TinyImageNet's is the CS231n zip's widely published md5."""
    from torchvision.datasets import CIFAR10, MNIST

    return {
        **dict(MNIST.resources),
        CIFAR10.filename: CIFAR10.tgz_md5,
        **dict(CIFAR10.train_list + CIFAR10.test_list),
        CIFAR10.meta["filename"]: CIFAR10.meta["md5"],
        "tiny-imagenet-200.zip": "90528d7ca1a48142e341f4ef8d21d0de",
    }


class DatasetMissingError(FileNotFoundError):
    """A dataset is not available from any allowed source; the message says how to get it."""


class DataIntegrityError(RuntimeError):
    """A dataset file is corrupted, truncated or malformed and must not be used."""


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex md5 of a file, read in chunks so multi-GB archives do not need to fit in memory."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(path: Path, fix: str) -> None:
    """Raise :class:`DataIntegrityError` unless ``path`` has the md5 listed for its file name.

    ``fix`` tells the user what to do about a bad file (delete and re-download, where to copy).
    """
    expected = known_md5().get(path.name)
    if expected is None:
        raise KeyError(f"no expected md5 known for {path.name!r}")
    actual = md5sum(path)
    if actual != expected:
        raise DataIntegrityError(
            f"{path}: md5 {actual} does not match the expected {expected} (corrupted or truncated download). {fix}"
        )


@contextmanager
def staging_dir(parent: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory inside ``parent``; it is removed on exit, success or not.

    Build a dataset there and :func:`publish` the finished result, so a failure at any step leaves
    nothing half-built under the data root.
    """
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fastcert-tmp-", dir=parent))
    tmp.chmod(default_mode(directory=True))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(built: Path, final: Path) -> None:
    """Rename a finished directory into place (atomic on one filesystem).

    If another process published ``final`` first (parallel jobs sharing a data root), its copy wins.
    """
    try:
        os.rename(built, final)
    except OSError:
        if not final.is_dir():
            raise


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy a file so that ``dst`` appears only complete (temp file + os.replace)."""
    with open(src, "rb") as source:
        atomic_write(dst, lambda handle: shutil.copyfileobj(source, handle))
