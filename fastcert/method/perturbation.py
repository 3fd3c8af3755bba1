"""The L-infinity threat model in normalized input space (the paper's radii: Sec. 4.1; normalization: App. C, Datasets).

Datasets are normalized per channel, but the paper's ε is in [0, 1] pixel units: the box is
``[x - ε/std, x + ε/std]`` clipped to the normalized image of [0, 1], so that the certified
region never contains impossible pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from fastcert.method.affine import channel_view


def _per_channel(values: Sequence[float] | Tensor, like: Tensor) -> Tensor:
    return channel_view(torch.as_tensor(values, dtype=like.dtype, device=like.device), like)


def input_box(
    x: Tensor, eps: float, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor
) -> tuple[Tensor, Tensor]:
    """Return ``(x_lower, x_upper)`` of the clipped ε-ball around normalized ``x`` ([B, C, ...])."""
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    mean_t, std_t = _per_channel(mean, x), _per_channel(std, x)
    eps_n = eps / std_t
    x_upper = torch.minimum(x + eps_n, (1 - mean_t) / std_t)
    x_lower = torch.maximum(x - eps_n, (0 - mean_t) / std_t)
    return x_lower, x_upper
