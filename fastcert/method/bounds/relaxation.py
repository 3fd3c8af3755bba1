"""The ReLU linear relaxation of backward (CROWN) passes, and one autograd kernel that applies it.

Applying the relaxation to coefficients ``A`` [B, M, *S] is a dozen elementwise steps (the
slopes from the bounds, a sign test on A, the products, the intercept term); under plain autograd
each keeps its own buffers and gets its own backward kernel, which in CROWN-IBP training made
these steps cost as much as the transposed convolutions around them. :class:`ReluBackward` does
them in one function that saves only ``A`` and the bounds and recomputes the rest in its backward,
where the gradients with respect to A and to the bounds are written out by hand.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

RELU_UPPER_FLOOR = 1e-8  # auto_LiRPA: u⁺ >= l⁻ + 1e-8 keeps the chord slope finite
# Coefficients per slice of examples on CPU (1 MiB in float32): a slice's temporaries stay in cache.
CPU_SLICE_ELEMENTS = 2**18


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

    Both passes run over the examples in slices (:func:`_example_slices`): the dozen elementwise
    steps of a slice then work on temporaries that stay in cache, where full-size temporaries
    (32 MiB each for CNN-7's first layers at batch 128) cost a trip to memory per step and, with
    glibc's default allocator, page faults on every fresh buffer. Only ``A`` and the bounds are
    saved; the backward recomputes the relaxation slice by slice. Each element goes through the
    same operations as on the whole tensor, so the values do not depend on the slicing.
    """

    @staticmethod
    def forward(ctx: Any, A: Tensor, lower: Tensor, upper: Tensor) -> tuple[Tensor, Tensor]:
        batch = lower.shape[0]
        A_in = _empty_in_layout(A, (batch,) + tuple(A.shape[1:]))
        offset = A.new_empty(batch, A.shape[1])
        for rows in _example_slices(A, batch):
            A_rows = _rows(A, rows, batch)
            lower_neg, _, slope_up, slope_low, _ = relaxation(lower[rows], upper[rows])
            A_neg = A_rows.clamp(max=0)
            # A·(slope_up if A < 0 else slope_low), without torch.where (many times slower on CPU)
            torch.addcmul(A_rows * slope_low, A_neg, slope_up - slope_low, out=A_in[rows])
            offset[rows] = _inner(A_neg, -lower_neg * slope_up)
        ctx.save_for_backward(A, lower, upper)
        return A_in, offset

    @staticmethod
    def backward(ctx: Any, grad_in: Tensor, grad_offset: Tensor) -> tuple[Tensor | None, ...]:
        A, lower, upper = ctx.saved_tensors
        batch = lower.shape[0]
        need_A, need_bounds = ctx.needs_input_grad[0], ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        grad_A = _empty_in_layout(A, tuple(grad_in.shape)) if need_A else None
        grad_lower = torch.empty_like(lower) if need_bounds else None
        grad_upper = torch.empty_like(upper) if need_bounds else None
        for rows in _example_slices(A, batch):
            A_rows, low, up = _rows(A, rows, batch), lower[rows], upper[rows]
            lower_neg, width, slope_up, slope_low, from_upper = relaxation(low, up)
            A_neg = A_rows.clamp(max=0)
            grad_off = grad_offset[rows].view(grad_offset[rows].shape + (1,) * (A.dim() - 2))
            grad_rows = grad_in[rows]
            through_upper = grad_rows - grad_off * lower_neg  # A<0: A_in = A·s, offset term A·(−l⁻)·s
            if grad_A is not None:
                through_lower = grad_rows * slope_low
                negative = (A_neg < 0).to(A_neg.dtype)
                torch.addcmul(through_lower, negative, through_upper * slope_up - through_lower, out=grad_A[rows])
            if grad_lower is None or grad_upper is None:
                continue
            grad_slope = _sum_specs(A_neg * through_upper)
            # slope = u⁺/w with w = u⁺ − l⁻: ∂/∂u⁺ = (1 − slope)/w, ∂/∂l⁻ = slope/w; offset: −l⁻·slope
            scaled = grad_slope / width
            grad_upper_pos = scaled * (1 - slope_up)
            grad_lower_neg = (scaled - _sum_specs(A_neg * grad_off)) * slope_up
            dtype = grad_upper_pos.dtype
            grad_lower_neg = torch.addcmul(grad_lower_neg, (~from_upper).to(dtype), grad_upper_pos)
            # routing of the bounds' gradient: u⁺ = max(max(u, 0), l⁻ + 1e-8), l⁻ = min(l, 0)
            to_upper, to_lower = from_upper & (up >= 0), low <= 0
            torch.mul(grad_lower_neg, to_lower.to(dtype), out=grad_lower[rows])
            torch.mul(grad_upper_pos, to_upper.to(dtype), out=grad_upper[rows])
        if grad_A is not None and A.shape[0] != grad_A.shape[0]:  # A was shared by every example
            grad_A = grad_A.sum(0, keepdim=True)
        return grad_A, grad_lower, grad_upper


def _example_slices(A: Tensor, batch: int) -> list[slice]:
    """Slices of the examples with about :data:`CPU_SLICE_ELEMENTS` coefficients each on CPU; a GPU
    takes the whole batch, one kernel per step. A slice holds at least two examples (unless the
    batch is one): torch computes a batch of one matrix product in another order (``mm``) than
    one of a larger batch (``bmm``), whose items agree with the whole batch's bit for bit."""
    step = batch if A.device.type != "cpu" else max(2, CPU_SLICE_ELEMENTS // math.prod(A.shape[1:]))
    starts = list(range(0, batch, step))
    if len(starts) > 1 and batch - starts[-1] == 1:
        starts.pop()
    return [slice(begin, end) for begin, end in zip(starts, starts[1:] + [batch])]


def _rows(A: Tensor, rows: slice, batch: int) -> Tensor:
    """The coefficients of the examples ``rows`` (all of A when it is shared by the batch)."""
    return A if A.shape[0] != batch else A[rows]


def _empty_in_layout(like: Tensor, shape: tuple[int, ...]) -> Tensor:
    """An empty tensor of ``shape`` whose dimensions lie in memory in the order of ``like``'s
    (channels-last coefficients stay channels-last), the batch outermost (``like`` may have a
    batch dimension of 1, whose stride says nothing)."""
    order = [0] + sorted(range(1, like.dim()), key=like.stride, reverse=True)
    inverse = sorted(range(like.dim()), key=order.__getitem__)
    return like.new_empty([shape[dim] for dim in order]).permute(inverse)


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
    return ReluBackward.apply(A, lower, upper)
