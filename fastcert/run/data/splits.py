"""A split of a dataset as the training loop sees it, and deterministic class-balanced subsets.

All randomness of an epoch (shuffle order, flips, crop offsets) is drawn from the caller's generator
*when* :meth:`Split.batches` *is called*, before the first batch is produced. The generator state
after that call therefore does not depend on how far the iterator was consumed, and saving/restoring
``generator.get_state()`` at epoch boundaries reproduces a run bit for bit.

Images are kept as uint8 and converted per batch: augmentation commutes with the per-pixel
``/255`` and per-channel normalization, and uint8 is a quarter of the memory of float32.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
from torch import Tensor

from fastcert.run.data.augment import draw_augmentation, flip_crop, normalize


class ImageStore(Protocol):
    """Where a split's uint8 [C, H, W] images live (a device tensor, or files read by workers)."""

    def __len__(self) -> int: ...

    def subset(self, indices: Tensor) -> ImageStore:
        """The store restricted to ``indices`` (in that order)."""
        ...

    def to(self, device: torch.device) -> ImageStore:
        """The store moved to ``device`` (a no-op for a store that reads files)."""
        ...

    def load(self, order: Tensor, batch_size: int, device: torch.device) -> Iterator[Tensor]:
        """Yield uint8 [B, C, H, W] batches on ``device`` for ``order`` cut into ``batch_size``."""
        ...


class TensorStore:
    """All images as one uint8 tensor on the training device: batches are an ``index_select``."""

    def __init__(self, images: Tensor) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"expected uint8 [N, C, H, W] images, got {images.dtype} {tuple(images.shape)}")
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, indices: Tensor) -> TensorStore:
        return TensorStore(self.images.index_select(0, indices.to(self.images.device)))

    def to(self, device: torch.device) -> TensorStore:
        return TensorStore(self.images.to(device))

    def load(self, order: Tensor, batch_size: int, device: torch.device) -> Iterator[Tensor]:
        order = order.to(self.images.device)
        for chunk in order.split(batch_size):
            yield self.images.index_select(0, chunk).to(device, non_blocking=True)


class Split:
    """One split (train or test): ``len(split)`` examples and :meth:`batches` over them."""

    def __init__(
        self,
        store: ImageStore,
        labels: Tensor,
        mean: Sequence[float],
        std: Sequence[float],
        padding: int | None,
        device: torch.device | str = "cpu",
    ) -> None:
        if labels.dim() != 1 or len(labels) != len(store):
            raise ValueError(f"{len(store)} images but labels of shape {tuple(labels.shape)}")
        self.store = store
        self.device = torch.device(device)
        self.labels = labels.to(device=self.device, dtype=torch.int64)
        self.mean, self.std, self.padding = tuple(mean), tuple(std), padding

    def __len__(self) -> int:
        return len(self.store)

    def subset(self, indices: Tensor) -> Split:
        """The examples at ``indices``, with the same normalization and augmentation."""
        return Split(
            self.store.subset(indices),
            self.labels.index_select(0, indices.to(self.device)),
            self.mean,
            self.std,
            self.padding,
            self.device,
        )

    def to(self, device: torch.device | str) -> Split:
        """The same split with its data (where held in memory) and its batches on ``device``."""
        device = torch.device(device)
        return Split(self.store.to(device), self.labels, self.mean, self.std, self.padding, device)

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool,
        generator: torch.Generator | None = None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Normalized float32 x [B, C, H, W] and int64 y on the device; last batch may be smaller.

        ``augment`` applies the dataset's train augmentation (flip, then edge-padded RandomCrop);
        it is a no-op for datasets without one (MNIST). Randomness is drawn now, see the module doc.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self)
        host = generator.device if generator is not None else torch.device("cpu")
        order = torch.randperm(n, generator=generator, device=host) if shuffle else torch.arange(n, device=host)
        augmentation = None
        if augment and self.padding is not None:
            flip, offsets = draw_augmentation(n, self.padding, generator)
            # the epoch's draws go to the device in one copy, not one per batch
            augmentation = (flip.to(self.device), offsets.to(self.device), self.padding)
        return self._iterate(order, augmentation, batch_size)

    def _iterate(
        self, order: Tensor, augmentation: tuple[Tensor, Tensor, int] | None, batch_size: int
    ) -> Iterator[tuple[Tensor, Tensor]]:
        order_dev = order.to(self.device)
        for k, images in enumerate(self.store.load(order, batch_size, self.device)):
            window = slice(k * batch_size, k * batch_size + len(images))
            if augmentation is not None:
                flip, offsets, padding = augmentation
                images = flip_crop(images, flip[window], offsets[window], padding)
            yield normalize(images, self.mean, self.std), self.labels[order_dev[window]]


def seeded_generator(seed: int, purpose: str) -> torch.Generator:
    """A CPU generator for one purpose ("train-subset", "synthetic-test", ...) of one seed.

    Independent streams per purpose keep, e.g., the test subset fixed when train_size changes.
    """
    digest = hashlib.sha256(f"{seed}/{purpose}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def balanced_subset(labels: Tensor, n: int, num_classes: int, generator: torch.Generator) -> Tensor:
    """Sorted indices of ``n`` examples, as equal per class as the class sizes allow.

    Each class is shuffled; examples are then taken by within-class rank (all first-ranked, then all
    second-ranked, ...), ties between classes broken by a random class order. Deterministic from the
    generator, and a smaller subset is always contained in a larger one with the same seed.
    """
    total = len(labels)
    if not 1 <= n <= total:
        raise ValueError(f"subset size must be in [1, {total}], got {n}")
    perm = torch.randperm(total, generator=generator)
    permuted = labels.cpu()[perm]
    sorted_labels, by_label = torch.sort(permuted, stable=True)
    counts = torch.bincount(sorted_labels, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(total, dtype=torch.int64)
    rank[by_label] = torch.arange(total) - starts[sorted_labels]
    class_position = torch.randperm(num_classes, generator=generator)
    key = rank * num_classes + class_position[permuted]
    return perm[torch.argsort(key)[:n]].sort().values
