"""The ReLU linear relaxation of backward (CROWN) passes, and one autograd kernel that applies it.

Applying the relaxation to coefficients ``A`` [B, M, *S] is a dozen elementwise steps (the
slopes from the bounds, a sign test on A, the products, the intercept term); under plain autograd
each keeps its own buffers and gets its own backward kernel, which in CROWN-IBP training made
these steps cost as much as the transposed convolutions around them. :class:`ReluBackward` does
them in one function that saves only ``A`` and the bounds and recomputes the rest in its backward,
where the gradients with respect to A and to the bounds are written out by hand.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

RELU_UPPER_FLOOR = 1e-8  # auto_LiRPA: u⁺ >= l⁻ + 1e-8 keeps the chord slope finite


class Relaxation(NamedTuple):
    """The pieces of the relaxation that its gradient needs too (all [B, 1, *S] or like the bounds)."""

    lower_neg: Tensor  # l⁻ = min(l, 0)
    width: Tensor  # u⁺ − l⁻
    slope_up: Tensor  # u⁺ / (u⁺ − l⁻)
    slope_low: Tensor  # 1.0 iff slope_up > 0.5
    from_upper: Tensor  # bool: u⁺ = max(u, 0) (else u⁺ = l⁻ + 1e-8)


def relaxation(lower: Tensor, upper: Tensor) -> Relaxation:
    """auto_LiRPA's "adaptive" linear bounds of ``relu`` over ``[lower, upper]``.

    Upper line ``slope_up·(x − l⁻)`` (the chord; ``l⁻ = min(l, 0)``,
    ``u⁺ = max(max(u, 0), l⁻ + 1e-8)``, ``slope_up = u⁺/(u⁺ − l⁻)``, intercept
    ``−l⁻·slope_up``); lower line ``slope_low·x`` with ``slope_low = 1`` iff ``slope_up > 0.5``
    (i.e. ``u > −l``): the choice that minimizes the relaxation's area. Stable neurons get slopes
    exactly 1/0 and intercept 0.
    """
    lower_neg = lower.clamp(max=0)
    floor = lower_neg + RELU_UPPER_FLOOR
    upper_clamped = upper.clamp(min=0)
    from_upper = upper_clamped >= floor
    upper_pos = torch.maximum(upper_clamped, floor)
    width = upper_pos - lower_neg
    slope_up = upper_pos / width
    return Relaxation(lower_neg, width, slope_up, (slope_up > 0.5).to(slope_up.dtype), from_upper)


class ReluBackward(torch.autograd.Function):
    """``(A, l, u) → (A_in, offset)``: the lower-bound backward rule of ReLU.

    ``A`` [B or 1, M, *S]; ``l``, ``u`` [B, 1, *S]. Positive coefficients take the lower line,
    negative ones the upper line of :func:`relaxation`: ``A_in = A·(slope_low if A ≥ 0 else
    slope_up)``, ``offset = Σ_S min(A, 0)·intercept_up`` [B, M]. First-order gradients only; at the
    measure-zero ties of ``max``/``clamp`` the gradient goes to one side instead of being split.
    """

    @staticmethod
    def forward(ctx: Any, A: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        lower_neg, width, slope_up, slope_low, from_upper = relaxation(lower, upper)
        A_neg = A.clamp(max=0)
        # A·(slope_up if A < 0 else slope_low), without torch.where (many times slower on CPU)
        A_in = torch.addcmul(A * slope_low, A_neg, slope_up - slope_low)
        offset = _inner(A_neg, -lower_neg * slope_up)
        # routing of the bounds' gradient: u⁺ = max(max(u, 0), l⁻ + 1e-8), l⁻ = min(l, 0)
        to_upper, to_lower = from_upper & (upper >= 0), lower <= 0
        ctx.save_for_backward(A_neg, lower_neg, slope_up, slope_low, width, from_upper, to_upper, to_lower)
        return A_in, offset

    @staticmethod
    def backward(ctx: Any, grad_in: Tensor, grad_offset: Tensor) -> tuple[Tensor | None, ...]:
        A_neg, lower_neg, slope_up, slope_low, width, from_upper, to_upper, to_lower = ctx.saved_tensors
        grad_off = grad_offset.view(grad_offset.shape + (1,) * (A_neg.dim() - 2))
        through_upper = grad_in - grad_off * lower_neg  # A<0: A_in = A·s, offset term A·(−l⁻)·s
        grad_A = None
        if ctx.needs_input_grad[0]:
            through_lower = grad_in * slope_low
            negative = (A_neg < 0).to(A_neg.dtype)
            grad_A = torch.addcmul(through_lower, negative, through_upper * slope_up - through_lower)
            if A_neg.shape[0] != grad_A.shape[0]:  # A was shared by every example
                grad_A = grad_A.sum(0, keepdim=True)
        if not (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            return grad_A, None, None
        grad_slope = _sum_specs(A_neg * through_upper)
        # slope = u⁺/w with w = u⁺ − l⁻: ∂/∂u⁺ = (1 − slope)/w, ∂/∂l⁻ = slope/w; offset: −l⁻·slope
        scaled = grad_slope / width
        grad_upper_pos = scaled * (1 - slope_up)
        grad_lower_neg = (scaled - _sum_specs(A_neg * grad_off)) * slope_up
        dtype = grad_upper_pos.dtype
        grad_lower_neg = torch.addcmul(grad_lower_neg, (~from_upper).to(dtype), grad_upper_pos)
        return grad_A, grad_lower_neg * to_lower.to(dtype), grad_upper_pos * to_upper.to(dtype)


def _inner(A: Tensor, values: Tensor) -> Tensor:
    """``Σ_S A·values`` [B, M] for A [B or 1, M, *S] and values [B, 1, *S].

    Both are flattened in the memory order of A (channels innermost for channels-last
    coefficients), so that A is flattened without a copy.
    """
    if A.dim() == 5 and not A.is_contiguous():
        A, values = A.permute(0, 1, 3, 4, 2), values.permute(0, 1, 3, 4, 2)
    flat_values = values.reshape(values.shape[0], -1, 1)
    return torch.matmul(A.flatten(2), flat_values).squeeze(-1)


def _sum_specs(values: Tensor) -> Tensor:
    """Sum over the spec dimension (dim 1), kept."""
    return values if values.shape[1] == 1 else values.sum(1, keepdim=True)


def relu_backward(A: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
    """:class:`ReluBackward` applied (``lower``/``upper`` [B, 1, *S])."""
    return ReluBackward.apply(A, lower, upper)  # type: ignore[no-any-return]
