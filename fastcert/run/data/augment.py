"""Vectorized train augmentation and normalization on the training device.

The authors apply ``RandomHorizontalFlip()`` then ``RandomCrop(size, padding, padding_mode='edge')``
per PIL image in a DataLoader. Here the same maps are applied to a whole uint8 batch with two
``gather`` calls, so a GPU is not starved by per-image Python work. The random parameters are drawn
separately (:func:`draw_augmentation`) from a caller-owned generator, which makes every epoch
reproducible from the generator state alone.

With edge padding, "flip, pad by p, crop at offset (i, j)" reads source row
``clamp(r + i - p)`` and source column ``clamp(c + j - p)`` of the flipped image, i.e. column
``W - 1 - clamp(c + j - p)`` of the original; that index arithmetic is all :func:`flip_crop` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from fastcert.method.affine import channel_constant


def draw_augmentation(n: int, padding: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Draw per-example flips (p=0.5) and crop offsets in ``[0, 2*padding]`` for (row, column).

    Returns ``(flip [n] bool, offsets [n, 2] int64)`` on the generator's device (CPU by default).
    """
    device = generator.device if generator is not None else torch.device("cpu")
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=device)
    return flip, offsets


def flip_crop(images: Tensor, flip: Tensor, offsets: Tensor, padding: int) -> Tensor:
    """Flip (where ``flip``) then edge-pad by ``padding`` and crop back to size at ``offsets``.

    ``images`` is [B, C, H, W] of any dtype; the result has the same shape, dtype and device.
    ``flip`` and ``offsets`` must be on that device too (a copy per batch would make the host
    wait for a GPU: :class:`fastcert.run.data.splits.Split` moves an epoch's draws once).
    """
    b, c, h, w = images.shape
    device = images.device
    rows = (torch.arange(h, device=device) + offsets[:, :1] - padding).clamp_(0, h - 1)
    cols = (torch.arange(w, device=device) + offsets[:, 1:] - padding).clamp_(0, w - 1)
    cols = torch.where(flip[:, None], w - 1 - cols, cols)
    out = images.gather(2, rows[:, None, :, None].expand(b, c, h, w))
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 [B, C, H, W] → float32 ``(x/255 - mean)/std``, in ToTensor-then-Normalize order."""
    shape = (1, -1, 1, 1)
    mean_t = channel_constant(tuple(mean), torch.float32, images.device).reshape(shape)
    std_t = channel_constant(tuple(std), torch.float32, images.device).reshape(shape)
    return images.to(torch.float32).div_(255).sub_(mean_t).div_(std_t)
