"""Fused autograd functions for the hot spots of the IBP traversal (first-order gradients only).

They exist for speed (benchmarks/README.md has the measurements); each one's values and
gradients equal those of the plain torch expression it replaces.

* :class:`IntervalLinear`. Plain autograd on ``F.linear(r, W.abs())`` materializes, per step,
  ``|W|``, the gradient with respect to ``|W|``, ``sign(W)`` and their product, then accumulates
  two weight gradients. For CNN-7's 32768×512 hidden layer each is a fresh 64 MiB buffer, and on
  CPU fresh buffers of that size come straight from the kernel (a page fault per page), which costs
  more than the arithmetic. Here the backward writes the weight gradient once, multiplies it by
  ``sign(W)`` in place and accumulates the clean/center part into it with ``addmm_``; on CPU
  ``|W|`` and ``sign(W)`` go into buffers kept from step to step (:class:`AbsWeightCache`).
* :class:`IntervalBatchNorm` and :class:`IntervalRelu` work on the whole ``[clean; center]``
  stack, so that no gradient flows through slices of it (autograd's slice backward zero-fills a
  full-size buffer per slice and then adds them up), and use torch's BatchNorm statistics kernel
  (which also does the running-stat update in the same pass; ``torch.var_mean`` over N, H, W is
  several times slower on CPU).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from fastcert.method.affine import batchnorm_affine, channel_shape, channel_view


class AbsWeightCache:
    """Reusable ``sign(W)`` and ``|W|`` buffers for one weight, CPU only.

    Lent to one forward at a time: a buffer still saved by a graph whose backward has not run
    (its autograd node is alive and :meth:`release` was not called) is never overwritten; a
    fresh pair is allocated instead. If a graph kept with ``retain_graph=True`` is backpropagated
    again after a reuse, autograd's version check raises instead of using stale values. On GPU the
    caching allocator makes fresh buffers cheap, so nothing is kept there.
    """

    def __init__(self) -> None:
        self._buffers: tuple[Tensor, Tensor] | None = None
        self._holder: weakref.ref[Any] | None = None

    def lend(self, weight: Tensor, holder: Any) -> tuple[Tensor, Tensor] | None:
        """The buffers, now held by ``holder`` (an autograd ctx), or None if unavailable."""
        if weight.device.type != "cpu" or (self._holder is not None and self._holder() is not None):
            return None
        buffers = self._buffers
        if buffers is None or buffers[0].shape != weight.shape or buffers[0].dtype != weight.dtype:
            buffers = self._buffers = (torch.empty_like(weight), torch.empty_like(weight))
        self._holder = weakref.ref(holder)
        return buffers

    def release(self) -> None:
        self._holder = None


class IntervalLinear(torch.autograd.Function):
    """``(stack, radius) → (stack Wᵀ + b, radius |W|ᵀ)``; first-order gradients only."""

    @staticmethod
    def forward(
        ctx: Any, stack: Tensor, radius: Tensor, weight: Tensor, bias: Tensor | None, cache: AbsWeightCache | None
    ) -> tuple[Tensor, Tensor]:
        buffers = None if cache is None else cache.lend(weight, ctx)
        if buffers is None:
            sign = weight.sign()
            abs_weight = weight * sign
        else:
            sign, abs_weight = torch.sign(weight, out=buffers[0]), torch.mul(weight, buffers[0], out=buffers[1])
        ctx.save_for_backward(stack, radius, weight, abs_weight, sign)
        ctx.has_bias = bias is not None
        ctx.cache = None if buffers is None else cache
        return F.linear(stack, weight, bias), F.linear(radius, abs_weight)

    @staticmethod
    def backward(ctx: Any, grad_stack: Tensor, grad_radius: Tensor) -> tuple[Tensor | None, ...]:
        stack, radius, weight, abs_weight, sign = ctx.saved_tensors
        need_stack, need_radius, need_weight, need_bias, _ = ctx.needs_input_grad
        grad_stack_in = grad_stack @ weight if need_stack else None
        grad_radius_in = grad_radius @ abs_weight if need_radius else None
        grad_weight = grad_bias = None
        if need_weight:
            flat_grad_radius = grad_radius.reshape(-1, grad_radius.shape[-1])
            grad_weight = flat_grad_radius.t() @ radius.reshape(-1, radius.shape[-1])  # d/d|W|
            grad_weight.mul_(sign)
            flat_grad_stack = grad_stack.reshape(-1, grad_stack.shape[-1])
            grad_weight.addmm_(flat_grad_stack.t(), stack.reshape(-1, stack.shape[-1]))
        if ctx.has_bias and need_bias:
            grad_bias = grad_stack.reshape(-1, grad_stack.shape[-1]).sum(0)
        if ctx.cache is not None:
            ctx.cache.release()
        return grad_stack_in, grad_radius_in, grad_weight, grad_bias, None


def interval_linear(
    stack: Tensor, radius: Tensor, weight: Tensor, bias: Tensor | None, cache: AbsWeightCache | None = None
) -> tuple[Tensor, Tensor]:
    """Center/clean rows through ``W`` and ``b``, radius through ``|W|`` (see module docstring)."""
    out: tuple[Tensor, Tensor] = IntervalLinear.apply(stack, radius, weight, bias, cache)
    return out


class BatchStatistics(torch.autograd.Function):
    """Per-channel mean and biased variance of ``z`` [N, C, ...], differentiable in ``z``.

    The forward is torch's own BatchNorm statistics kernel, which also applies the running-stat
    update of a train-mode ``nn.BatchNorm`` (unbiased variance, ``momentum``) in the same pass when
    running stats are given; ``torch.var_mean`` over (N, H, W) is several times slower on CPU. The
    backward is one fused multiply-add: ``∂L/∂z = (g_mean + 2·g_var·(z − mean)) / n``.
    """

    @staticmethod
    def forward(
        ctx: Any, z: Tensor, running_mean: Tensor | None, running_var: Tensor | None, momentum: float
    ) -> tuple[Tensor, Tensor]:
        mean, var = torch.batch_norm_update_stats(z, running_mean, running_var, momentum)
        ctx.save_for_backward(z, mean)
        return mean, var

    @staticmethod
    def backward(ctx: Any, grad_mean: Tensor, grad_var: Tensor) -> tuple[Tensor | None, ...]:
        z, mean = ctx.saved_tensors
        count = z.numel() // z.shape[1]
        slope = 2.0 * grad_var / count
        offset = grad_mean / count - slope * mean
        return torch.addcmul(channel_view(offset, z), z, channel_view(slope, z)), None, None, None


def batch_statistics(
    z: Tensor, running_mean: Tensor | None = None, running_var: Tensor | None = None, momentum: float = 0.0
) -> tuple[Tensor, Tensor]:
    """``(mean, biased var)`` of ``z`` per channel; updates the running stats when given."""
    out: tuple[Tensor, Tensor] = BatchStatistics.apply(z, running_mean, running_var, momentum)
    return out


def _threshold_grad(grad: Tensor | None, value: Tensor, out: Tensor | None = None) -> Tensor | None:
    """``grad`` where ``value > 0``, else 0 (ReLU's backward), optionally written into ``out``."""
    if grad is None:
        return None
    if out is None:
        return torch.ops.aten.threshold_backward(grad, value, 0)
    return torch.ops.aten.threshold_backward.grad_input(grad, value, 0, grad_input=out)


class IntervalRelu(torch.autograd.Function):
    """ReLU of a stack ``[clean; center]`` [2B, ...] with radius [B, ...].

    Outputs ``[relu(clean); (u⁺ + l⁺)/2]``, radius ``(u⁺ − l⁺)/2`` and the pre-activation bounds
    ``l = c − r``, ``u = c + r`` (differentiable: the regularizers use them). Hand-written so that
    no gradient passes through slices of the stack (autograd would zero-fill a full-size buffer
    per slice and add them up).
    """

    @staticmethod
    def forward(ctx: Any, stack: Tensor, radius: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        rows = radius.shape[0]
        clean, center = stack[:rows], stack[rows:]
        lower, upper = center - radius, center + radius
        out = torch.empty_like(stack)
        torch.clamp(clean, min=0, out=out[:rows])
        lower_pos, upper_pos = lower.clamp(min=0), upper.clamp(min=0)
        torch.add(upper_pos, lower_pos, out=out[rows:]).mul_(0.5)
        new_radius = torch.sub(upper_pos, lower_pos).mul_(0.5)
        ctx.save_for_backward(stack, lower, upper)
        return out, new_radius, lower, upper

    @staticmethod
    def backward(
        ctx: Any,
        grad_out: Tensor | None,
        grad_radius: Tensor | None,
        grad_lower: Tensor | None,
        grad_upper: Tensor | None,
    ) -> tuple[Tensor, Tensor | None]:
        stack, lower, upper = ctx.saved_tensors
        rows = lower.shape[0]
        grad_stack = torch.empty_like(stack)
        grad_center_out = None
        if grad_out is None:
            grad_stack[:rows].zero_()
        else:
            _threshold_grad(grad_out[:rows], stack[:rows], out=grad_stack[:rows])
            grad_center_out = grad_out[rows:]
        # c' = (u⁺ + l⁺)/2 and r' = (u⁺ − l⁺)/2, so ∂/∂u⁺ = (g_c' + g_r')/2, ∂/∂l⁺ = (g_c' − g_r')/2
        grad_u = _add(_threshold_grad(_half(grad_center_out, grad_radius, 1.0), upper), grad_upper)
        grad_l = _add(_threshold_grad(_half(grad_center_out, grad_radius, -1.0), lower), grad_lower)
        # l = c − r, u = c + r
        if grad_u is None and grad_l is None:
            grad_stack[rows:].zero_()
            return grad_stack, None
        if grad_u is None or grad_l is None:
            only = grad_u if grad_l is None else grad_l
            assert only is not None
            grad_stack[rows:].copy_(only)
            return grad_stack, only if grad_l is None else -only
        torch.add(grad_u, grad_l, out=grad_stack[rows:])
        return grad_stack, torch.sub(grad_u, grad_l)


def _half(center: Tensor | None, radius: Tensor | None, sign: float) -> Tensor | None:
    """``(center + sign·radius) / 2`` with ``None`` as zero (``None`` if both are)."""
    if radius is None:
        return None if center is None else center * 0.5
    if center is None:
        return radius * (0.5 * sign)
    return torch.add(center, radius, alpha=sign).mul_(0.5)


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    """``a + b`` with ``None`` as zero, accumulated in place into ``a`` (a fresh temporary)."""
    if a is None or b is None:
        return b if a is None else a
    return a.add_(b)


def interval_relu(stack: Tensor, radius: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(stack', radius', lower, upper)`` of a ReLU (see :class:`IntervalRelu`)."""
    out: tuple[Tensor, Tensor, Tensor, Tensor] = IntervalRelu.apply(stack, radius)
    return out


class IntervalBatchNorm(torch.autograd.Function):
    """BatchNorm as a per-channel affine map on a stack ``[clean; center]`` and its radius.

    ``scale = γ/sqrt(var + eps)``, ``shift = β − mean·scale``; outputs ``stack·scale + shift``,
    ``radius·|scale|``, and ``scale``/``shift`` themselves (a CROWN pass reuses them). With
    ``batch_stats`` the statistics are the mean and biased variance of the first ``rows`` rows
    (the clean batch), from torch's BatchNorm statistics kernel, which also updates the running
    stats in the same pass when ``momentum`` is not None; otherwise the running stats are used.
    ``centralize=False``/``unitize=False`` replace the mean by 0 / the variance by 1. One
    hand-written backward replaces autograd's chain (and its full-size zero-filled gradient for
    the clean-row slice the statistics read).
    """

    @staticmethod
    def forward(
        ctx: Any,
        stack: Tensor,
        radius: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        rows: int,
        batch_stats: bool,
        momentum: float | None,
        eps: float,
        centralize: bool,
        unitize: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        ctx.set_materialize_grads(False)
        if batch_stats:
            update = momentum is not None
            batch_mean, var = torch.batch_norm_update_stats(
                stack[:rows], running_mean if update else None, running_var if update else None, momentum or 0.0
            )
        else:
            assert running_mean is not None and running_var is not None
            batch_mean, var = running_mean.clone(), running_var.clone()
        scale, shift, invstd = batchnorm_affine(batch_mean, var, weight, bias, eps, centralize, unitize)
        mean = batch_mean if centralize else torch.zeros_like(batch_mean)
        view = channel_shape(stack)
        out = torch.addcmul(shift.view(view), stack, scale.view(view))
        new_radius = radius * scale.abs().view(view)
        ctx.save_for_backward(stack, radius, batch_mean, mean, invstd, scale)
        ctx.settings = (rows, batch_stats and centralize, batch_stats and unitize, weight is not None, bias is not None)
        return out, new_radius, scale, shift

    @staticmethod
    def backward(
        ctx: Any,
        grad_out: Tensor | None,
        grad_radius: Tensor | None,
        grad_scale: Tensor | None,
        grad_shift: Tensor | None,
    ) -> tuple[Tensor | None, ...]:
        stack, radius, batch_mean, mean, invstd, scale = ctx.saved_tensors
        rows, mean_grad, var_grad, has_weight, has_bias = ctx.settings
        dims = [0] + list(range(2, stack.dim()))
        view = channel_shape(stack)
        # gradient reaching scale and shift, from all three uses of the map
        to_scale, to_shift = grad_scale, grad_shift
        if grad_out is not None:
            to_shift = _add(grad_out.sum(dims), to_shift)
            to_scale = _add((grad_out * stack).sum(dims), to_scale)
        if grad_radius is not None:
            to_scale = _add((grad_radius * radius).sum(dims) * scale.sign(), to_scale)
        nones: tuple[None, ...] = (None,) * 8
        if to_scale is None and to_shift is None:
            return (None, None, None, None) + nones
        to_scale = torch.zeros_like(scale) if to_scale is None else to_scale
        to_shift = torch.zeros_like(scale) if to_shift is None else to_shift
        # shift = β − mean·scale: scale's total gradient also flows through shift
        scale_total = to_scale - to_shift * mean
        grad_weight = scale_total * invstd if has_weight and ctx.needs_input_grad[2] else None
        grad_bias = to_shift if has_bias and ctx.needs_input_grad[3] else None
        grad_stack = None
        if ctx.needs_input_grad[0]:
            grad_stack = torch.zeros_like(stack) if grad_out is None else grad_out * scale.view(view)
            if mean_grad or var_grad:
                clean = stack[:rows]
                count = clean.numel() // clean.shape[1]
                grad_mean = -to_shift * scale if mean_grad else torch.zeros_like(scale)
                # ∂scale/∂var = −scale·invstd²/2; ∂var/∂z = 2(z − batch mean)/n; ∂mean/∂z = 1/n
                slope = -scale_total * scale * invstd * invstd / count if var_grad else torch.zeros_like(scale)
                offset = grad_mean / count - slope * batch_mean
                grad_stack[:rows].addcmul_(clean, slope.view(view)).add_(offset.view(view))
        grad_radius_in = None
        if grad_radius is not None and ctx.needs_input_grad[1]:
            grad_radius_in = grad_radius * scale.abs().view(view)
        return (grad_stack, grad_radius_in, grad_weight, grad_bias) + nones


def interval_batch_norm(
    stack: Tensor,
    radius: Tensor,
    weight: Tensor | None,
    bias: Tensor | None,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    rows: int,
    batch_stats: bool,
    momentum: float | None,
    eps: float,
    centralize: bool = True,
    unitize: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(stack', radius', scale, shift)`` of a BatchNorm (see :class:`IntervalBatchNorm`)."""
    out: tuple[Tensor, Tensor, Tensor, Tensor] = IntervalBatchNorm.apply(
        stack, radius, weight, bias, running_mean, running_var, rows, batch_stats, momentum, eps, centralize, unitize
    )
    return out
