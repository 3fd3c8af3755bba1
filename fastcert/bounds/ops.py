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

    def interval(self, ctx: PassContext, flow: Flow) -> Flow:
        weight, bias = self.module.weight, self.module.bias
        stack = F.linear(flow.stack, weight, bias)
        radius = None if flow.radius is None else abs_linear(flow.radius, weight)
        return Flow(stack, radius)

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

    def _statistics(self, clean: Tensor) -> tuple[Tensor | None, Tensor | None]:
        bn = self.module
        if not (bn.training or bn.running_mean is None or bn.running_var is None):
            return bn.running_mean, bn.running_var
        if clean.numel() // clean.shape[1] <= 1:
            raise ValueError(
                f"BatchNorm '{self.name}' in train mode needs more than 1 value per channel, "
                f"got input shape {tuple(clean.shape)}"
            )
        if bn.training and bn.track_running_stats:
            self._update_running_stats(clean.detach())
        dims = [0] + list(range(2, clean.dim()))
        var, mean = torch.var_mean(clean, dim=dims, correction=0)
        return mean, var

    def _update_running_stats(self, clean: Tensor) -> None:
        """The running-stat update of ``nn.BatchNorm.forward`` (momentum or cumulative average)."""
        bn = self.module
        factor = 0.0 if bn.momentum is None else bn.momentum
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:
                factor = 1.0 / float(bn.num_batches_tracked)
        F.batch_norm(clean, bn.running_mean, bn.running_var, training=True, momentum=factor, eps=bn.eps)

    def affine(self, clean: Tensor) -> tuple[Tensor, Tensor]:
        """``(scale, shift)`` per channel for this traversal."""
        bn = self.module
        mean, var = self._statistics(clean)
        assert mean is not None and var is not None
        if not getattr(bn, "centralize", True):
            mean = torch.zeros_like(mean)
        if not getattr(bn, "unitize", True):
            var = torch.ones_like(var)
        scale = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            scale = bn.weight * scale
        shift = -mean * scale
        if bn.bias is not None:
            shift = bn.bias + shift
        return scale, shift

    def interval(self, ctx: PassContext, flow: Flow) -> Flow:
        scale, shift = self.affine(ctx.clean(flow))
        ctx.bn_affine[self.index] = (scale, shift)
        stack = torch.addcmul(_channel_view(shift, flow.stack), flow.stack, _channel_view(scale, flow.stack))
        radius = None if flow.radius is None else flow.radius * _channel_view(scale.abs(), flow.radius)
        return Flow(stack, radius)


class ReluOp(Op):
    """``nn.ReLU``: ``[l, u] → [relu(l), relu(u)]``; records ``(l, u)`` as a pre-activation bound."""

    kind = "relu"

    def interval(self, ctx: PassContext, flow: Flow) -> Flow:
        if flow.radius is None:
            center = ctx.center(flow)
            ctx.pre_activation.append((center, center))
            return Flow(torch.relu(flow.stack), None)
        center = ctx.center(flow)
        lower, upper = center - flow.radius, center + flow.radius
        ctx.pre_activation.append((lower, upper))
        lower_out, upper_out = torch.relu(lower), torch.relu(upper)
        new_center = (upper_out + lower_out) * 0.5
        new_radius = (upper_out - lower_out) * 0.5
        return Flow(torch.cat([torch.relu(ctx.clean(flow)), new_center]), new_radius)


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


def abs_linear(radius: Tensor, weight: Tensor) -> Tensor:
    """``radius @ |W|ᵀ``: the radius rule of a Linear layer."""
    return F.linear(radius, weight.abs())
