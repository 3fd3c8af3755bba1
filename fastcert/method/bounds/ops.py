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

from fastcert.method.affine import batchnorm_affine, channel_view

from .kernels import (
    AbsWeightCache,
    batch_statistics,
    interval_batch_norm,
    interval_linear,
    interval_relu,
)
from .relaxation import relu_backward
from .window import Window, WindowContext

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
    ``reuse_bn``: the BatchNorms apply the maps already in ``bn_affine`` (no statistics, no
    running-stat update), for interval passes over bounds a backward pass has tightened.
    """

    batch: int
    stacked: bool
    pre_activation: list[Bounds] = field(default_factory=list)
    bn_affine: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    reuse_bn: bool = False

    def clean(self, flow: Flow) -> Tensor:
        return flow.stack[: self.batch] if self.stacked else flow.stack

    def center(self, flow: Flow) -> Tensor:
        return flow.stack[self.batch :] if self.stacked else flow.stack


class Op:
    """Base class: an operation of the compiled plan."""

    kind: ClassVar[str] = "op"

    def __init__(self, index: int, name: str, module: nn.Module | None, src: tuple[int, ...]) -> None:
        self.index = index
        self.name = name
        self.module = module
        self.src = src

    def interval(self, ctx: PassContext, *inputs: Flow) -> Flow:
        """IBP: the clean activation, the center and the radius of this op's output, from one
        input per entry of ``src`` (each op unpacks the fixed number it takes)."""
        raise NotImplementedError

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of the output (without batch) for inputs of ``shapes`` (one per entry of ``src``)."""
        raise NotImplementedError

    def backward(self, ctx: BackwardContext, A: Tensor) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """CROWN: coefficients of each input and the offset (see :class:`BackwardContext`)."""
        raise NotImplementedError

    windowed: ClassVar[bool] = False  # has a backward_window rule

    def backward_window(self, ctx: WindowContext, window: Window) -> tuple[tuple[Window, ...], Tensor | None]:
        """CROWN on local coefficients (:mod:`.window`): as ``backward``, per row, offset [P] or None."""
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

    def interval(self, ctx: PassContext, *inputs: Flow) -> Flow:
        (flow,) = inputs
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

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        (shape,) = shapes
        return shape[:-1] + (self.module.out_features,)

    def backward(self, ctx: BackwardContext, A: Tensor) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """CROWN: ``A·(Wh + b) = (AW)·h + A·b``; a spec matrix C as the first A is C folded into W."""
        bias = self.module.bias
        offset = None if bias is None else _sum_trailing(torch.matmul(A, bias))
        return (torch.matmul(A, self.module.weight),), offset


class ConvOp(Op):
    """``nn.Conv2d`` (any stride, padding, dilation, groups; zero padding): as Linear, with |kernel|.

    On CPU every result is channels-last (:func:`cpu_channels_last`), and a 1×1 convolution with
    stride > 1 runs as a stride-1 one on the subsampled grid (:func:`_subsample`): oneDNN 3.13
    (torch 2.15's CPU convolutions) corrupts the heap in the weight gradient of a channels-last
    1×1 strided convolution, and of its transpose, with few channels at large images (e.g. 4
    channels at 64×64: ResNeXt's downsampling shortcut at TinyImageNet size and 1/16 width); the
    process then aborts. Running it in NCHW instead avoided the bug at 2-3× the cost of the
    channels-last kernels (``tests/test_bounds_ibp.py`` has the reproducer).
    """

    kind = "conv2d"
    module: nn.Conv2d

    def _subsampled(self, x: Tensor) -> bool:
        m = self.module
        return x.device.type == "cpu" and m.kernel_size == (1, 1) and m.stride != (1, 1)

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        m = self.module
        if self._subsampled(x):
            padding = _numeric_padding(m, self.name)
            return cpu_channels_last(F.conv2d(_subsample(x, m.stride, padding), weight, bias, 1, 0, 1, m.groups))
        return cpu_channels_last(F.conv2d(x, weight, bias, m.stride, m.padding, m.dilation, m.groups))

    def interval(self, ctx: PassContext, *inputs: Flow) -> Flow:
        (flow,) = inputs
        weight = self.module.weight
        stack = self._conv(flow.stack, weight, self.module.bias)
        radius = None if flow.radius is None else self._conv(flow.radius, weight.abs(), None)
        return Flow(stack, radius)

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        (shape,) = shapes
        m = self.module
        padding = _numeric_padding(m, self.name)
        spatial = tuple(
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, s, p, d, k in zip(shape[1:], m.stride, padding, m.dilation, m.kernel_size)
        )
        return (m.out_channels,) + spatial

    def backward(self, ctx: BackwardContext, A: Tensor) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """CROWN: the transposed convolution maps A [B, M, C_out, H', W'] back to the input shape.

        ``output_padding`` restores the input rows/columns a strided convolution never reads
        (their coefficients are 0); the bias term is ``Σ_{h,w} A[:, :, c] · b_c``.
        """
        m = self.module
        in_shape = ctx.shapes[self.src[0]]
        padding = _numeric_padding(m, self.name)
        flat = cpu_channels_last(A.reshape((-1,) + tuple(A.shape[2:])))
        if self._subsampled(flat):
            pointwise = F.conv_transpose2d(flat, m.weight, None, 1, 0, 0, m.groups)
            A_in = _unsubsample(pointwise, in_shape[1:], m.stride, padding)
        else:
            output_padding = tuple(
                size - ((out - 1) * s - 2 * p + d * (k - 1) + 1)
                for size, out, s, p, d, k in zip(
                    in_shape[1:], A.shape[3:], m.stride, padding, m.dilation, m.kernel_size
                )
            )
            A_in = F.conv_transpose2d(flat, m.weight, None, m.stride, padding, output_padding, m.groups, m.dilation)
        offset = None if m.bias is None else torch.matmul(_sum_trailing(A, keep=3), m.bias)
        return (A_in.view(tuple(A.shape[:2]) + in_shape),), offset

    windowed = True

    def backward_window(self, ctx: WindowContext, window: Window) -> tuple[tuple[Window, ...], Tensor | None]:
        """The transposed convolution without padding maps a window of h rows to one of
        ``(h − 1)·stride + dilation·(k − 1) + 1`` rows starting ``padding`` rows earlier (stride
        times further along); the part that lands on the padding ring is masked where it
        would count (:class:`~.window.Window`). Channels-last on CPU (oneDNN's transposed
        convolutions run ~1.7× faster so, and the ReLU rule then reads each position's channels
        contiguously), except 1×1 kernels, whose channels-last strided transpose oneDNN
        corrupts (class docstring)."""
        m = self.module
        padding = _numeric_padding(m, self.name)
        window = ctx.inside(window, self.index + 1)
        A = window.A.contiguous() if m.kernel_size == (1, 1) else cpu_channels_last(window.A)
        A_in = F.conv_transpose2d(A, m.weight, None, m.stride, 0, 0, m.groups, m.dilation)
        scale = (window.scale[0] * m.stride[0], window.scale[1] * m.stride[1])
        shift = (window.shift[0] * m.stride[0] - padding[0], window.shift[1] * m.stride[1] - padding[1])
        offset = None if m.bias is None else torch.matmul(window.A.sum((2, 3)), m.bias)
        return (Window(A_in, scale, shift, inside=False),), offset


def cpu_channels_last(t: Tensor) -> Tensor:
    """Images go channels-last on CPU (a no-op when they already are): oneDNN's convolutions, its
    transposed convolutions (2-3× faster on the CROWN coefficients) and the per-channel
    BatchNorm kernels run faster on that layout, and every op of a traversal keeps it. Stated
    per convolution because torch may pick NCHW when the layout is ambiguous (one channel)."""
    if t.dim() == 4 and t.device.type == "cpu":
        return t.contiguous(memory_format=torch.channels_last)
    return t


def _subsample(x: Tensor, stride: tuple[int, ...], padding: tuple[int, ...]) -> Tensor:
    """The pixels a 1×1 convolution with ``stride`` and zero ``padding`` reads, [N, C, H', W']."""
    (sh, sw), (ph, pw) = stride, padding
    if ph or pw:
        x = F.pad(x, (pw, pw, ph, ph))
    return x[:, :, ::sh, ::sw]


def _unsubsample(A: Tensor, size: tuple[int, ...], stride: tuple[int, ...], padding: tuple[int, ...]) -> Tensor:
    """The transpose of :func:`_subsample`: ``A`` [N, C, H', W'] placed on the strided pixels of a
    zero [N, C, H, W] (the padding ring cropped away), channels-last on CPU."""
    (sh, sw), (ph, pw), (h, w) = stride, padding, size
    full = torch.empty(
        A.shape[:2] + (h + 2 * ph, w + 2 * pw), dtype=A.dtype, device=A.device, memory_format=torch.channels_last
    ).zero_()
    full[:, :, ::sh, ::sw] = A
    return cpu_channels_last(full[:, :, ph : ph + h, pw : pw + w])


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
        scale, shift, _ = batchnorm_affine(mean, var, bn.weight, bn.bias, bn.eps, *self._switches())
        return scale, shift

    def interval(self, ctx: PassContext, *inputs: Flow) -> Flow:
        (flow,) = inputs
        bn = self.module
        if ctx.reuse_bn:
            return _affine_flow(flow, *ctx.bn_affine[self.index])
        if flow.radius is None:
            scale, shift = self.affine(ctx.clean(flow))
            ctx.bn_affine[self.index] = (scale, shift)
            return _affine_flow(flow, scale, shift)
        batch_stats, momentum = self._mode(ctx.clean(flow))
        stack, radius, scale, shift = interval_batch_norm(
            flow.stack,
            flow.radius,
            bn.weight,
            bn.bias,
            bn.running_mean,
            bn.running_var,
            ctx.batch,
            batch_stats,
            momentum,
            bn.eps,
            *self._switches(),
        )
        ctx.bn_affine[self.index] = (scale, shift)
        return Flow(stack, radius)

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        (shape,) = shapes
        return shape

    def backward(self, ctx: BackwardContext, A: Tensor) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """CROWN: the per-channel affine map of this traversal (``ctx.bn_affine``), transposed."""
        scale, shift = ctx.bn_affine[self.index]
        view = (1, 1, -1) + (1,) * (A.dim() - 3)
        return (A * scale.view(view),), torch.matmul(_sum_trailing(A, keep=3), shift)

    windowed = True

    def backward_window(self, ctx: WindowContext, window: Window) -> tuple[tuple[Window, ...], Tensor | None]:
        """The per-channel affine map on a window (its shift counts on the map's positions only)."""
        scale, shift = ctx.bn_affine[self.index]
        A_in = window.A * scale.view(1, -1, 1, 1)
        offset = torch.matmul(ctx.channel_sums(window, self.index + 1), shift)
        return (Window(A_in, window.scale, window.shift, window.inside),), offset


def _affine_flow(flow: Flow, scale: Tensor, shift: Tensor) -> Flow:
    """A per-channel affine map of known ``(scale, shift)`` applied to a flow: ``scale·c + shift``,
    ``|scale|·r``."""
    stack = torch.addcmul(channel_view(shift, flow.stack), flow.stack, channel_view(scale, flow.stack))
    return Flow(stack, None if flow.radius is None else flow.radius * channel_view(scale.abs(), flow.radius))


class ReluOp(Op):
    """``nn.ReLU``: ``[l, u] → [relu(l), relu(u)]``; records ``(l, u)`` as a pre-activation bound."""

    kind = "relu"

    def interval(self, ctx: PassContext, *inputs: Flow) -> Flow:
        (flow,) = inputs
        if flow.radius is None:
            center = ctx.center(flow)
            ctx.pre_activation.append((center, center))
            return Flow(torch.relu(flow.stack), None)
        stack, radius, lower, upper = interval_relu(flow.stack, flow.radius)
        ctx.pre_activation.append((lower, upper))
        return Flow(stack, radius)

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        (shape,) = shapes
        return shape

    def backward(self, ctx: BackwardContext, A: Tensor) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """CROWN (lower bound of ``A·relu(z)``): positive coefficients take the lower line, negative
        ones the upper line of :func:`~.relaxation.relaxation` over the input bounds in
        ``ctx.relu_bounds`` (one autograd kernel, :class:`~.relaxation.ReluBackward`)."""
        lower, upper = ctx.relu_bounds[self.index]
        A_in, offset = relu_backward(_layout_like(A, lower), lower.unsqueeze(1), upper.unsqueeze(1))
        return (A_in,), offset

    windowed = True

    def backward_window(self, ctx: WindowContext, window: Window) -> tuple[tuple[Window, ...], Tensor | None]:
        """The same lines as ``backward``, read from each row's example on each row's window
        (zero off the map, so the coefficients there vanish)."""
        lines = ctx.gather(ctx.relu_lines(self.index), window)  # [P, h, w, 3, C]
        A = window.A.permute(0, 2, 3, 1)  # [P, h, w, C]
        A_neg = A.clamp(max=0)
        A_in = torch.addcmul(A * lines[..., 0, :], A_neg, lines[..., 1, :])
        offset = (A_neg * lines[..., 2, :]).flatten(1).sum(1)
        return (Window(A_in.permute(0, 3, 1, 2), window.scale, window.shift, inside=True),), offset


class FlattenOp(Op):
    """``nn.Flatten``: reshapes clean, center and radius alike (the batch dimension is kept)."""

    kind = "flatten"
    module: nn.Flatten

    def interval(self, ctx: PassContext, *inputs: Flow) -> Flow:
        (flow,) = inputs
        start, end = self.module.start_dim, self.module.end_dim
        radius = None if flow.radius is None else flow.radius.flatten(start, end)
        return Flow(flow.stack.flatten(start, end), radius)

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        (shape,) = shapes
        return tuple(
            torch.empty((1,) + shape, device="meta").flatten(self.module.start_dim, self.module.end_dim).shape[1:]
        )

    def backward(self, ctx: BackwardContext, A: Tensor) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """CROWN: coefficients take the input's shape back."""
        return (A.reshape(tuple(A.shape[:2]) + ctx.shapes[self.src[0]]),), None


class AddOp(Op):
    """Residual sum ``branch(x) + shortcut(x)``: centers and radii add (= lower and upper bounds add)."""

    kind = "add"

    def interval(self, ctx: PassContext, *inputs: Flow) -> Flow:
        left, right = inputs
        if left.radius is None or right.radius is None:
            radius = right.radius if left.radius is None else left.radius
        else:
            radius = left.radius + right.radius
        return Flow(left.stack + right.stack, radius)

    def output_shape(self, *shapes: tuple[int, ...]) -> tuple[int, ...]:
        left, _ = shapes
        return left

    def backward(self, ctx: BackwardContext, A: Tensor) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """CROWN: both summands get the same coefficients (summed again where the branches split)."""
        return (A, A), None

    windowed = True

    def backward_window(self, ctx: WindowContext, window: Window) -> tuple[tuple[Window, ...], Tensor | None]:
        """Both summands get the same window."""
        return (window, window), None


# --- backward (CROWN) support ------------------------------------------------------------------
@dataclass
class BackwardContext:
    """What the ``backward`` rules read besides the coefficients they map.

    A backward rule maps coefficients ``A`` [B, M, *output shape] of a linear function of the op's
    output to coefficients of its inputs plus an offset [B, M] (or None), such that the input-side
    function is a lower bound of the output-side one wherever the inputs lie within the bounds
    used (an equality for affine ops). A batch dimension of 1 stands for coefficients shared by
    every example (they stay so until the first ReLU, which makes them per example).
    ``bn_affine``: each BatchNorm's ``(scale, shift)`` by op index, taken from the traversal being
    refined, so that CROWN uses the very statistics of its clean logits. ``relu_bounds``:
    ``(lower, upper)`` of each ReLU's input by op index (IBP for CROWN-IBP; CROWN bounds for full CROWN).
    ``shapes``: every plan value's shape without batch.
    """

    bn_affine: dict[int, tuple[Tensor, Tensor]]
    relu_bounds: dict[int, Bounds]
    shapes: list[tuple[int, ...]]


def _sum_trailing(A: Tensor, keep: int = 2) -> Tensor:
    """Sum over every dimension after the first ``keep`` (none if there are none), in any layout."""
    return A if A.dim() <= keep else A.sum(dim=tuple(range(keep, A.dim())))


def _layout_like(A: Tensor, bounds: Tensor) -> Tensor:
    """A [B, M, C, H, W] in the memory layout of channels-last bounds [B, C, H, W].

    Elementwise steps between tensors of different layouts run strided, and the transposed
    convolutions keep the layout they are given: one copy at the first ReLU makes every later
    step of the backward pass channels-last like the traversal's activations.
    """
    if bounds.dim() != 4 or not bounds.is_contiguous(memory_format=torch.channels_last):
        return A
    channels_inner = A.permute(0, 1, 3, 4, 2)
    return A if channels_inner.is_contiguous() else channels_inner.contiguous().permute(0, 1, 4, 2, 3)


def _numeric_padding(conv: nn.Conv2d, name: str) -> tuple[int, ...]:
    """The conv's padding as numbers; the transposed convolution needs them explicitly."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0)
        raise TypeError(f"fastcert.method.bounds: CROWN does not support padding={conv.padding!r} (Conv2d '{name}')")
    return tuple(conv.padding)
