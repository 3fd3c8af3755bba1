"""One class per operation, holding that operation's bound rules.

Every op carries the module it was compiled from (parameters are read at call time, so optimizer
updates and ``load_state_dict`` need no recompilation), its dotted path in the model (for error
messages) and ``src``, the indices of the plan values it consumes (value 0 is the network input,
value ``i + 1`` is the output of op ``i``). An op's ``interval`` maps :class:`Flow` values to a
``Flow``; a CROWN rule (``backward``) belongs next to it in the same class.

A :class:`Flow` carries the clean activation and the IBP center *stacked along the batch*
(rows ``[:B]`` clean, ``[B:]`` center), plus the IBP radius. Affine maps are identical for the
clean and the center rows, so one kernel call serves both (``conv(cat[x, c])``), which is cheaper
than two calls of half the size; the radius goes through ``|W|``. When the center *is* the clean
input (radius exactly 0 at ε = 0) the stack holds the clean rows only and the bound pass costs no
more than a clean forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kernels import (
    AbsWeightCache,
    batch_statistics,
    interval_batch_norm,
    interval_linear,
    interval_relu,
)

Bounds = tuple[Tensor, Tensor]


@dataclass
class Flow:
    """The value of one plan node in a traversal.

    ``stack``: ``[B, ...]`` (center = clean) or ``[2B, ...]`` (clean rows, then center rows).
    ``radius``: ``[B, ...]``, elementwise ≥ 0, or ``None`` when it is exactly zero.
    """

    stack: Tensor
    radius: Tensor | None


@dataclass
class PassContext:
    """State shared by the ops of one traversal.

    ``pre_activation`` collects ``(lower, upper)`` of every ReLU input in forward order;
    ``bn_affine`` keeps, per op index, the ``(scale, shift)`` each BatchNorm used, so that a
    later backward (CROWN) pass reuses exactly the statistics of this traversal.
    """

    batch: int
    stacked: bool
    pre_activation: list[Bounds] = field(default_factory=list)
    bn_affine: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)

    def clean(self, flow: Flow) -> Tensor:
        return flow.stack[: self.batch] if self.stacked else flow.stack

    def center(self, flow: Flow) -> Tensor:
        return flow.stack[self.batch :] if self.stacked else flow.stack


def _channel_view(vector: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-channel vector [C] to broadcast over ``like`` [N, C, ...]."""
    return vector.view((1, -1) + (1,) * (like.dim() - 2))


class Op:
    """Base class: an operation of the compiled plan."""

    kind: ClassVar[str] = "op"

    def __init__(self, index: int, name: str, module: nn.Module | None, src: tuple[int, ...]) -> None:
        self.index = index
        self.name = name
        self.module = module
        self.src = src

    def interval(self, ctx: PassContext, *inputs: Flow) -> Flow:
        """IBP: the clean activation, the center and the radius of this op's output."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, src={self.src})"


class LinearOp(Op):
    """``nn.Linear``: ``c' = W c + b``, ``r' = |W| r``; the last one can absorb a spec matrix C."""

    kind = "linear"
    module: nn.Linear

    def __init__(self, index: int, name: str, module: nn.Module | None, src: tuple[int, ...]) -> None:
        super().__init__(index, name, module, src)
        self.abs_cache = AbsWeightCache()

    def interval(self, ctx: PassContext, flow: Flow) -> Flow:
        weight, bias = self.module.weight, self.module.bias
        if flow.radius is None:
            return Flow(F.linear(flow.stack, weight, bias), None)
        return Flow(*interval_linear(flow.stack, flow.radius, weight, bias, self.abs_cache))

    def interval_spec(self, ctx: PassContext, flow: Flow, spec: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Clean logits, and center and radius of ``spec @ logits`` with spec folded into W.

        The center ``C(Wc + b)`` equals ``(CW)c + Cb``; the radius must use ``|CW|`` (per
        example), which is what makes folding tighter than bounding ``C`` times logit intervals.
        """
        logits = F.linear(flow.stack, self.module.weight, self.module.bias)
        center = torch.bmm(spec, ctx.center(Flow(logits, None)).unsqueeze(-1)).squeeze(-1)
        radius = None
        if flow.radius is not None:
            folded = torch.matmul(spec, self.module.weight)  # [B, M, in]
            radius = torch.bmm(folded.abs(), flow.radius.unsqueeze(-1)).squeeze(-1)
        return ctx.clean(Flow(logits, None)), center, radius


class ConvOp(Op):
    """``nn.Conv2d`` (any stride, padding, dilation, groups; zero padding): as Linear, with |kernel|."""

    kind = "conv2d"
    module: nn.Conv2d

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        m = self.module
        return F.conv2d(x, weight, bias, m.stride, m.padding, m.dilation, m.groups)

    def interval(self, ctx: PassContext, flow: Flow) -> Flow:
        weight = self.module.weight
        stack = self._conv(flow.stack, weight, self.module.bias)
        radius = None if flow.radius is None else self._conv(flow.radius, weight.abs(), None)
        return Flow(stack, radius)


class BatchNormOp(Op):
    """``nn.BatchNorm1d/2d`` (and the partial variants) as the per-channel affine map it applies.

    In train mode (or without running stats) the statistics are the clean rows' batch mean and
    biased variance, not detached; the same ``scale = γ/sqrt(var + eps)``, ``shift = β − mean·scale``
    then maps the clean rows, the center (``c' = scale·c + shift``) and the radius
    (``r' = |scale|·r``). Running stats are updated from the clean rows exactly as
    ``F.batch_norm(training=True)`` does, once per traversal. ``centralize=False`` /
    ``unitize=False`` (PartialBatchNorm) replace the mean by 0 / the variance by 1 in both modes.
    """

    kind = "batchnorm"
    module: nn.BatchNorm1d | nn.BatchNorm2d

    def _mode(self, clean: Tensor) -> tuple[bool, float | None]:
        """``(batch statistics?, momentum of the running-stat update or None)``.

        Does the bookkeeping of ``nn.BatchNorm.forward`` (``num_batches_tracked``; momentum None
        means a cumulative average); called once per traversal.
        """
        bn = self.module
        if not (bn.training or bn.running_mean is None or bn.running_var is None):
            return False, None
        if clean.numel() // clean.shape[1] <= 1:
            raise ValueError(
                f"BatchNorm '{self.name}' in train mode needs more than 1 value per channel, "
                f"got input shape {tuple(clean.shape)}"
            )
        if not (bn.training and bn.track_running_stats):
            return True, None
        factor = 0.0 if bn.momentum is None else bn.momentum
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:
                factor = 1.0 / float(bn.num_batches_tracked)
        return True, factor

    def _switches(self) -> tuple[bool, bool]:
        return getattr(self.module, "centralize", True), getattr(self.module, "unitize", True)

    def affine(self, clean: Tensor) -> tuple[Tensor, Tensor]:
        """``(scale, shift)`` per channel for this traversal (updates running stats in train mode)."""
        bn = self.module
        batch_stats, momentum = self._mode(clean)
        if batch_stats:
            update = momentum is not None
            mean, var = batch_statistics(
                clean, bn.running_mean if update else None, bn.running_var if update else None, momentum or 0.0
            )
        else:
            assert bn.running_mean is not None and bn.running_var is not None
            mean, var = bn.running_mean, bn.running_var
        centralize, unitize = self._switches()
        if not centralize:
            mean = torch.zeros_like(mean)
        if not unitize:
            var = torch.ones_like(var)
        scale = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            scale = bn.weight * scale
        shift = -mean * scale
        if bn.bias is not None:
            shift = bn.bias + shift
        return scale, shift

    def interval(self, ctx: PassContext, flow: Flow) -> Flow:
        bn = self.module
        if flow.radius is None:
            scale, shift = self.affine(ctx.clean(flow))
            ctx.bn_affine[self.index] = (scale, shift)
            return Flow(torch.addcmul(_channel_view(shift, flow.stack), flow.stack, _channel_view(scale, flow.stack)), None)
        batch_stats, momentum = self._mode(ctx.clean(flow))
        stack, radius, scale, shift = interval_batch_norm(
            flow.stack, flow.radius, bn.weight, bn.bias, bn.running_mean, bn.running_var,
            ctx.batch, batch_stats, momentum, bn.eps, *self._switches(),
        )
        ctx.bn_affine[self.index] = (scale, shift)
        return Flow(stack, radius)


class ReluOp(Op):
    """``nn.ReLU``: ``[l, u] → [relu(l), relu(u)]``; records ``(l, u)`` as a pre-activation bound."""

    kind = "relu"

    def interval(self, ctx: PassContext, flow: Flow) -> Flow:
        if flow.radius is None:
            center = ctx.center(flow)
            ctx.pre_activation.append((center, center))
            return Flow(torch.relu(flow.stack), None)
        stack, radius, lower, upper = interval_relu(flow.stack, flow.radius)
        ctx.pre_activation.append((lower, upper))
        return Flow(stack, radius)


class FlattenOp(Op):
    """``nn.Flatten``: reshapes clean, center and radius alike (the batch dimension is kept)."""

    kind = "flatten"
    module: nn.Flatten

    def interval(self, ctx: PassContext, flow: Flow) -> Flow:
        start, end = self.module.start_dim, self.module.end_dim
        radius = None if flow.radius is None else flow.radius.flatten(start, end)
        return Flow(flow.stack.flatten(start, end), radius)


class AddOp(Op):
    """Residual sum ``branch(x) + shortcut(x)``: centers and radii add (= lower and upper bounds add)."""

    kind = "add"

    def interval(self, ctx: PassContext, left: Flow, right: Flow) -> Flow:
        if left.radius is None or right.radius is None:
            radius = right.radius if left.radius is None else left.radius
        else:
            radius = left.radius + right.radius
        return Flow(left.stack + right.stack, radius)
