"""On-device augmentation and normalization against torchvision's semantics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from fastcert.run.data.augment import draw_augmentation, flip_crop, normalize
from fastcert.run.data.loading import load_dataset


def reference(image: torch.Tensor, flip: bool, top: int, left: int, padding: int) -> torch.Tensor:
    """torchvision's RandomHorizontalFlip then RandomCrop(padding, 'edge') at a given draw."""
    size = image.shape[-1]
    flipped = TF.hflip(image) if flip else image
    return TF.crop(TF.pad(flipped, [padding], padding_mode="edge"), top, left, size, size)


@pytest.mark.parametrize(("channels", "size", "padding"), [(3, 32, 2), (3, 64, 4), (1, 28, 3)])
def test_flip_crop_equals_torchvision_on_every_draw(channels: int, size: int, padding: int) -> None:
    image = torch.randint(
        0,
        256,
        (channels, size, size),
        dtype=torch.uint8,
        generator=torch.Generator().manual_seed(0),
    )
    span = 2 * padding + 1
    draws = [(f, i, j) for f in (False, True) for i in range(span) for j in range(span)]
    flip = torch.tensor([f for f, _, _ in draws])
    offsets = torch.tensor([[i, j] for _, i, j in draws])
    ours = flip_crop(image.expand(len(draws), -1, -1, -1), flip, offsets, padding)
    for k, (f, i, j) in enumerate(draws):
        assert torch.equal(ours[k], reference(image, f, i, j, padding)), (f, i, j)


def _decode(out: torch.Tensor, padding: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recover (flip, top, left) from crops of an image whose channels are its row/column index."""
    centre = out.shape[-1] // 2
    row = out[:, 0, centre, centre].long()
    col = out[:, 1, centre, centre].long()
    flipped = (out[:, 1, centre, centre + 1].long() - col) < 0
    width = out.shape[-1]
    left = torch.where(flipped, width - 1 - col, col) - centre + padding
    return flipped.numpy(), (row - centre + padding).numpy(), left.numpy()


def _chi2_uniform(values: np.ndarray, cells: int) -> float:
    counts = np.bincount(values, minlength=cells)
    expected = len(values) / cells
    return float(((counts - expected) ** 2 / expected).sum())


def test_draw_distribution_matches_torchvision() -> None:
    """Flip rate and the joint offset distribution agree with torchvision's transforms."""
    size, padding, n = 8, 2, 3000
    grid = torch.arange(size, dtype=torch.uint8)
    image = torch.stack([grid[:, None].expand(size, size), grid[None, :].expand(size, size)])
    torch.manual_seed(0)
    transform = T.Compose([T.RandomHorizontalFlip(), T.RandomCrop(size, padding=padding, padding_mode="edge")])
    theirs = _decode(torch.stack([transform(image) for _ in range(n)]), padding)
    flip, offsets = draw_augmentation(n, padding, torch.Generator().manual_seed(0))
    ours = _decode(flip_crop(image.expand(n, -1, -1, -1), flip, offsets, padding), padding)
    np.testing.assert_array_equal(ours[0], flip.numpy())
    np.testing.assert_array_equal(np.stack(ours[1:], 1), offsets.numpy())
    span = 2 * padding + 1
    for flipped, top, left in (theirs, ours):
        assert abs(flipped.mean() - 0.5) < 4 * np.sqrt(0.25 / n)
        assert top.min() == 0 and top.max() == 2 * padding and left.min() == 0 and left.max() == 2 * padding
        assert _chi2_uniform(top * span + left, span * span) < 51.2  # chi2(24), p = 0.001
    joint = [np.bincount(t * span + c, minlength=span * span) / n for _, t, c in (theirs, ours)]
    assert 0.5 * np.abs(joint[0] - joint[1]).sum() < 0.08


def test_normalize_equals_to_tensor_then_normalize() -> None:
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    expected = T.Compose([T.ToTensor(), T.Normalize(mean, std)])(Image.fromarray(pixels))
    ours = normalize(torch.from_numpy(pixels).permute(2, 0, 1)[None], mean, std)
    assert ours.dtype == torch.float32 and torch.equal(ours[0], expected)


def test_cifar_batches_follow_the_authors_pipeline() -> None:
    """A shuffled augmented batch equals the authors' per-image PIL transform on the same draws."""
    train, _, info = load_dataset("cifar10", source="synthetic", train_size=64, test_size=10, seed=1)
    plain, _ = next(train.batches(64, shuffle=False, augment=False))
    raw = (plain * torch.tensor(info.std).reshape(1, 3, 1, 1) + torch.tensor(info.mean).reshape(1, 3, 1, 1)) * 255
    raw = raw.round().to(torch.uint8)
    generator = torch.Generator().manual_seed(7)
    twin = torch.Generator().manual_seed(7)
    x, y = next(train.batches(64, shuffle=True, augment=True, generator=generator))
    order = torch.randperm(64, generator=twin)
    flip, offsets = draw_augmentation(64, 2, twin)
    to_input = T.Compose([T.ToTensor(), T.Normalize(info.mean, info.std)])
    for k in range(64):
        image = Image.fromarray(raw[order[k]].permute(1, 2, 0).numpy())
        image = TF.hflip(image) if flip[k] else image
        image = TF.crop(TF.pad(image, [2], padding_mode="edge"), int(offsets[k, 0]), int(offsets[k, 1]), 32, 32)
        assert torch.equal(x[k], to_input(image))
    assert torch.equal(y, train.labels[order])


def test_mnist_has_no_augmentation() -> None:
    train, _, _ = load_dataset("mnist", source="synthetic", train_size=50, test_size=10)
    generator = torch.Generator().manual_seed(0)
    a = torch.cat([x for x, _ in train.batches(16, shuffle=False, augment=True, generator=generator)])
    b = torch.cat([x for x, _ in train.batches(16, shuffle=False, augment=False)])
    assert torch.equal(a, b)
