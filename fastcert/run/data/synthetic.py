"""Synthetic stand-ins: same shapes and class count as a real dataset, never mistaken for it.

Each class has a smooth random prototype image; an example is its class prototype at a random
contrast plus pixel noise, clipped to [0, 1] and stored as uint8 like real images. That is learnable
in a few hundred steps (so short runs show training working) but not trivially separable. The
prototypes are shared by train and test; everything is deterministic from the seed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from fastcert.datasets import DatasetSpec
from fastcert.run.data.splits import Split, TensorStore, seeded_generator

_PROTOTYPE_GRID = 4
_NOISE_STD = 0.25
_CHUNK = 4096


def _prototypes(spec: DatasetSpec, seed: int) -> Tensor:
    channels, height, width = spec.input_shape
    coarse = torch.rand(
        spec.num_classes, channels, _PROTOTYPE_GRID, _PROTOTYPE_GRID,
        generator=seeded_generator(seed, f"synthetic-{spec.name}-prototypes"),
    )  # fmt: skip
    return F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)


def _examples(prototypes: Tensor, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    num_classes = prototypes.shape[0]
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]
    images = torch.empty((n, *prototypes.shape[1:]), dtype=torch.uint8)
    for start in range(0, n, _CHUNK):  # chunks bound the float32 working memory
        y = labels[start : start + _CHUNK]
        contrast = 0.5 + 0.5 * torch.rand(len(y), 1, 1, 1, generator=generator)
        noise = _NOISE_STD * torch.randn((len(y), *prototypes.shape[1:]), generator=generator)
        pixels = 0.5 + contrast * (prototypes[y] - 0.5) + noise
        images[start : start + _CHUNK] = pixels.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    return images, labels


def load(spec: DatasetSpec, n_train: int, n_test: int, seed: int) -> tuple[Split, Split]:
    """Class-balanced synthetic train/test splits (CPU) with the dataset's normalization."""
    prototypes = _prototypes(spec, seed)
    splits = []
    for which, n in (("train", n_train), ("test", n_test)):
        images, labels = _examples(prototypes, n, seeded_generator(seed, f"synthetic-{spec.name}-{which}"))
        splits.append(Split(TensorStore(images), labels, spec.mean, spec.std, spec.padding))
    return splits[0], splits[1]
