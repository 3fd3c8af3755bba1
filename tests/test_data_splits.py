"""Subsets, batching, resumable randomness and synthetic stand-ins."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_builders import write_mnist_raw

from fastcert.datasets import DATASETS
from fastcert.run.data import integrity, load_dataset
from fastcert.run.data.splits import Split, TensorStore, balanced_subset


@pytest.fixture
def mnist_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    built = write_mnist_raw(tmp_path / "MNIST" / "raw", n_train=200, n_test=100)
    for name, md5 in built.md5.items():
        monkeypatch.setitem(integrity.known_md5(), name, md5)
    return tmp_path


def test_balanced_subset_with_unequal_classes() -> None:
    labels = torch.cat([torch.zeros(3, dtype=torch.long), torch.arange(1, 10).repeat_interleave(20)])
    chosen = balanced_subset(labels, 50, 10, torch.Generator().manual_seed(0))
    counts = torch.bincount(labels[chosen], minlength=10)
    assert counts.sum() == 50 and counts[0] == 3  # the small class is exhausted ...
    assert counts[1:].max() - counts[1:].min() <= 1  # ... the rest share the remainder evenly
    assert len(set(chosen.tolist())) == 50 and torch.equal(chosen, chosen.sort().values)
    again = balanced_subset(labels, 50, 10, torch.Generator().manual_seed(0))
    other = balanced_subset(labels, 50, 10, torch.Generator().manual_seed(1))
    smaller = balanced_subset(labels, 30, 10, torch.Generator().manual_seed(0))
    assert torch.equal(chosen, again) and not torch.equal(chosen, other)
    assert set(smaller.tolist()) <= set(chosen.tolist())
    with pytest.raises(ValueError, match=r"\[1, 183\]"):
        balanced_subset(labels, 184, 10, torch.Generator())


def test_dataset_subsets_are_balanced_and_deterministic(mnist_root: Path) -> None:
    train, test, info = load_dataset("mnist", root=mnist_root, train_size=50, test_size=30, seed=4)
    assert torch.bincount(train.labels).tolist() == [5] * 10 and torch.bincount(test.labels).tolist() == [3] * 10
    assert (info.n_train, info.n_test) == (50, 30) and info.label() == "MNIST (subset 50/30)"
    train2, _test2, _ = load_dataset("mnist", root=mnist_root, train_size=50, test_size=30, seed=4)
    x1, _ = next(train.batches(50, shuffle=False, augment=False))
    x2, _ = next(train2.batches(50, shuffle=False, augment=False))
    assert torch.equal(x1, x2)
    _, test3, _ = load_dataset("mnist", root=mnist_root, train_size=20, test_size=30, seed=4)
    assert torch.equal(test3.labels, test.labels)  # the test subset does not depend on train_size
    train5, _, _ = load_dataset("mnist", root=mnist_root, train_size=50, seed=5)
    assert not torch.equal(next(train5.batches(50, shuffle=False, augment=False))[0], x1)


@pytest.mark.parametrize(
    ("key", "value"),
    [("train_size", 0), ("train_size", 60001), ("test_size", True), ("test_size", 2.5)],
)
def test_bad_subset_sizes_are_rejected(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key):
        load_dataset("mnist", source="synthetic", **{key: value})


def test_subset_larger_than_the_data_on_disk(mnist_root: Path) -> None:
    with pytest.raises(ValueError, match=r"train_size must be an integer in \[1, 200\]"):
        load_dataset("mnist", root=mnist_root, train_size=500)


def _epoch(split: Split, generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(split.batches(32, shuffle=True, augment=True, generator=generator))


def test_resume_from_saved_generator_state_reproduces_batches() -> None:
    train, _, _ = load_dataset("cifar10", source="synthetic", train_size=100, test_size=10)
    generator = torch.Generator().manual_seed(123)
    _epoch(train, generator)
    saved = generator.get_state()
    second = _epoch(train, generator)
    restored = torch.Generator()
    restored.set_state(saved)
    replay = _epoch(train, restored)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(second, replay, strict=True))
    assert not torch.equal(second[0][0], _epoch(train, generator)[0][0])  # epochs differ


def test_randomness_is_drawn_when_batches_is_called() -> None:
    """The generator state after an epoch does not depend on how many batches were consumed."""
    train, _, _ = load_dataset("cifar10", source="synthetic", train_size=100, test_size=10)
    partial, full = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    next(iter(train.batches(32, shuffle=True, augment=True, generator=partial)))
    _epoch(train, full)
    assert torch.equal(partial.get_state(), full.get_state())


def test_batches_cover_the_split_once_with_a_smaller_last_batch() -> None:
    labels = torch.arange(25) % 10
    split = Split(TensorStore(torch.zeros(25, 1, 4, 4, dtype=torch.uint8)), labels, (0.0,), (1.0,), None)
    shuffled = list(split.batches(10, shuffle=True, augment=False, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in shuffled] == [10, 10, 5]
    assert sorted(torch.cat([y for _, y in shuffled]).tolist()) == sorted(labels.tolist())
    ordered = torch.cat([y for _, y in split.batches(10, shuffle=False, augment=False)])
    assert torch.equal(ordered, labels)
    with pytest.raises(ValueError, match="batch_size"):
        split.batches(0, shuffle=False, augment=False)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_synthetic_is_labelled_shaped_and_in_pixel_range(name: str) -> None:
    train, test, info = load_dataset(name, source="synthetic", train_size=400, test_size=200, seed=3)
    spec = DATASETS[name]
    assert info.synthetic and info.source == "synthetic" and "synthetic stand-in" in info.label()
    assert (info.num_classes, info.input_shape, info.mean, info.std) == (
        spec.num_classes,
        spec.input_shape,
        spec.mean,
        spec.std,
    )
    x, y = next(test.batches(200, shuffle=False, augment=False))
    assert x.shape == (200, *spec.input_shape) and y.dtype == torch.int64
    pixels = x * torch.tensor(spec.std).reshape(1, -1, 1, 1) + torch.tensor(spec.mean).reshape(1, -1, 1, 1)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6 and pixels.std() > 0.1
    counts = torch.bincount(train.labels, minlength=spec.num_classes)
    assert counts.max() - counts.min() <= 1
    same = load_dataset(name, source="synthetic", train_size=400, test_size=200, seed=3)[1]
    other = load_dataset(name, source="synthetic", train_size=400, test_size=200, seed=4)[1]
    assert torch.equal(next(same.batches(200, shuffle=False, augment=False))[0], x)
    assert not torch.equal(next(other.batches(200, shuffle=False, augment=False))[0], x)


def test_synthetic_is_learnable() -> None:
    """A linear model clearly beats chance within a few hundred steps: short runs show learning."""
    train, test, _info = load_dataset("cifar10", source="synthetic", train_size=2000, test_size=500, seed=0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        for x, y in train.batches(64, shuffle=True, augment=True, generator=generator):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    x, y = next(test.batches(500, shuffle=False, augment=False))
    accuracy = (model(x).argmax(1) == y).float().mean().item()
    assert accuracy > 0.5


def test_device_placement() -> None:
    train, _test, _ = load_dataset("mnist", source="synthetic", train_size=20, test_size=10, device="cpu")
    x, y = next(train.batches(8, shuffle=False, augment=False))
    assert x.device.type == "cpu" and y.device.type == "cpu" and train.labels.device.type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches() -> None:
    cpu = load_dataset("cifar10", source="synthetic", train_size=300, test_size=10)[0]
    gpu = load_dataset("cifar10", source="synthetic", train_size=300, test_size=10, device="cuda")[0]
    batches = [
        list(split.batches(64, shuffle=True, augment=True, generator=torch.Generator().manual_seed(9)))
        for split in (cpu, gpu)
    ]
    for (xc, yc), (xg, yg) in zip(*batches, strict=True):
        assert xg.device.type == "cuda" and torch.equal(xc, xg.cpu()) and torch.equal(yc, yg.cpu())
