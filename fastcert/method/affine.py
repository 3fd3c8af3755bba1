"""Per-channel affine maps: how a per-channel vector broadcasts, and what map a BatchNorm applies.

One place for both facts, because the model (``PartialBatchNorm``), the bound engine's interval
and backward rules, and the input box all apply them, and must agree to the last rounding: the
engine's bounds are only sound for the network the model computes.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor


def channel_shape(like: Tensor) -> tuple[int, ...]:
    """The shape ``(1, C, 1, ...)`` that broadcasts a per-channel vector over ``like`` [N, C, ...]."""
    return (1, -1) + (1,) * (like.dim() - 2)


def channel_view(vector: Tensor, like: Tensor) -> Tensor:
    """A per-channel vector [C] viewed to broadcast over ``like`` [N, C, ...]."""
    return vector.view(channel_shape(like))


@functools.lru_cache(maxsize=64)
def channel_constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``values`` (a dataset's per-channel mean or std) as a [C] tensor on ``device``, made once.

    Copying host numbers to a GPU makes the host wait for the GPU's queue; a training step or a
    test batch asks for the same few constants every time, so they are copied once per process.
    The tensor is shared: callers must not modify it in place.
    """
    return torch.tensor(values, dtype=dtype, device=device)


def batchnorm_affine(
    mean: Tensor,
    var: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    eps: float,
    centralize: bool = True,
    unitize: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(scale, shift, invstd)`` of BatchNorm as ``y = scale·x + shift``.

    ``invstd = 1/sqrt(var + eps)``, ``scale = γ·invstd``, ``shift = β − mean·scale``.
    ``centralize=False`` / ``unitize=False`` (auto_LiRPA's ``bn.mean`` / ``bn.var`` switches, the
    paper's Table 8) replace the mean by 0 / the variance by 1.
    """
    if not centralize:
        mean = torch.zeros_like(mean)
    invstd = torch.rsqrt((var if unitize else torch.ones_like(var)) + eps)
    scale = invstd if weight is None else invstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    return scale, shift, invstd
