"""Local coefficients for CROWN's intermediate bounds: one window per (example, neuron) row.

A backward pass for the neurons of a convolutional layer starts from unit coefficients, and
through convolutions, BatchNorm and ReLUs the coefficients of one neuron stay zero outside its
receptive field: on CNN-7 (MNIST) the fifth layer's neurons see 15×15 of the 28×28 input, the
second layer's 5×5. Carried over the whole feature map, as dense coefficients are, nearly all of
the work multiplies zeros. A :class:`Window` carries only the receptive field (auto_LiRPA's
"patches" mode rests on the same observation; this is a simpler form of it), one row per
(example, neuron) pair, so a backward pass also bounds exactly the neurons IBP leaves unstable
*in that example*, not in any example of the batch.

The rules that move a window through an op live with the op (``backward_window`` in
:mod:`.ops`); this module holds the window, the per-pass state the rules read
(:class:`WindowContext`) and the concretization over the input box.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .relaxation import relaxation

Pair = tuple[int, int]


@dataclass
class Window:
    """Coefficients [P, C, h, w] of P rows over windows of a [C, H, W] feature map.

    Row p covers the map's rows ``scale[0]·row[p] + shift[0] + [0, h)`` and columns
    ``scale[1]·col[p] + shift[1] + [0, w)``, where (row, col) is the position of p's neuron in
    the layer being bounded (:attr:`WindowContext.position`). ``scale`` and ``shift`` are the
    same for every row, so the windows of two branches meeting at a residual sum align by
    their geometry alone. Positions outside the map stand for a convolution's zero padding,
    which has no input to bound: their coefficients must not count. ``inside`` says they are
    zero already (true from a ReLU on: its lines read zeros there); a transposed convolution
    puts coefficients there, and the rules after it mask them where they would count
    (:meth:`WindowContext.inside`, :meth:`WindowContext.channel_sums`), which on the paper's
    conv-BN-ReLU layers is nowhere.
    """

    A: Tensor
    scale: Pair
    shift: Pair
    inside: bool

    def plus(self, other: Window) -> Window:
        """The sum of two windows of the same map (where a residual block's branches split)."""
        if self.scale != other.scale:
            raise ValueError(f"windows of scales {self.scale} and {other.scale} do not align")
        shift = (min(self.shift[0], other.shift[0]), min(self.shift[1], other.shift[1]))
        end = tuple(max(a.shift[d] + a.A.shape[2 + d] for a in (self, other)) for d in (0, 1))
        size = (end[0] - shift[0], end[1] - shift[1])
        A = _placed(self, shift, size) + _placed(other, shift, size)
        return Window(A, self.scale, shift, self.inside and other.inside)


def _placed(window: Window, shift: Pair, size: Pair) -> Tensor:
    """``window.A`` padded with zeros to a window of ``size`` starting at ``shift``."""
    top, left = window.shift[0] - shift[0], window.shift[1] - shift[1]
    bottom, right = size[0] - top - window.A.shape[2], size[1] - left - window.A.shape[3]
    if top == left == bottom == right == 0:
        return window.A
    return F.pad(window.A, (left, right, top, bottom))


@dataclass
class WindowContext:
    """What the window rules read: the pairs' examples and neuron positions, and the traversal's maps.

    ``example``, ``position``: [P] per row. ``bn_affine``, ``relu_bounds``, ``shapes``: as in
    :class:`~.ops.BackwardContext`. ``lines``: the ReLU relaxation lines by ReLU, kept
    channels-last (gathering a window of them reads contiguous channels) with the bounds they
    were made from; the caller shares the dict between the contexts of its chunks, so each
    ReLU's lines are made once per bounds.
    """

    example: Tensor
    position: tuple[Tensor, Tensor]
    bn_affine: dict[int, tuple[Tensor, Tensor]]
    relu_bounds: dict[int, tuple[Tensor, Tensor]]
    shapes: list[tuple[int, ...]]
    lines: dict[int, tuple[tuple[Tensor, Tensor], Tensor]] = field(default_factory=dict)

    def spans(self, window: Window) -> tuple[Tensor, Tensor]:
        """Absolute map rows [P, h] and columns [P, w] of each row's window."""
        spans = []
        for d in (0, 1):
            offsets = torch.arange(window.A.shape[2 + d], device=window.A.device)
            start = self.position[d] * window.scale[d] + window.shift[d]
            spans.append(start[:, None] + offsets)
        return spans[0], spans[1]

    def gather(self, maps: Tensor, window: Window) -> Tensor:
        """The windows [P, h, w, *K] of per-example channels-last maps [B, H + 2, W + 2, *K] that
        carry a ring of zeros (:func:`ringed`): positions outside the map read zeros.

        One ``index_select`` of whole K-blocks (a third faster than broadcast advanced indexing
        on CPU).
        """
        batch, height, width = maps.shape[:3]
        rows, cols = self.spans(window)
        rows = rows.clamp(-1, height - 2) + 1
        cols = cols.clamp(-1, width - 2) + 1
        flat = (self.example[:, None, None] * height + rows[:, :, None]) * width + cols[:, None, :]
        picked = maps.reshape(batch * height * width, -1).index_select(0, flat.flatten())
        return picked.view(flat.shape + maps.shape[3:])

    def _valid(self, window: Window, value: int) -> Tensor:
        """[P, h, w]: 1 where a row's window position lies on plan value ``value``'s map, else 0."""
        _, height, width = self.shapes[value]
        rows, cols = self.spans(window)
        valid_rows = ((rows >= 0) & (rows < height)).to(window.A.dtype)
        valid_cols = ((cols >= 0) & (cols < width)).to(window.A.dtype)
        return valid_rows[:, :, None] * valid_cols[:, None, :]

    def inside(self, window: Window, value: int) -> Window:
        """``window`` with the coefficients of positions outside plan value ``value``'s map zeroed."""
        if window.inside:
            return window
        A = window.A * self._valid(window, value)[:, None]
        return Window(A, window.scale, window.shift, True)

    def channel_sums(self, window: Window, value: int) -> Tensor:
        """``Σ_{h,w} A`` [P, C] over the positions on plan value ``value``'s map (for a per-channel
        bias or shift)."""
        if window.inside:
            return window.A.sum((2, 3))
        return torch.einsum("pchw,phw->pc", window.A, self._valid(window, value))

    def relu_lines(self, index: int) -> Tensor:
        """ReLU ``index``'s relaxation as ringed channels-last maps [B, H + 2, W + 2, 3, C]: the
        lower line's slope, the upper line's slope minus it, and the upper line's intercept
        (:func:`.relaxation.relaxation`); all zero on the ring, so coefficients there vanish. Made
        again only when the ReLU's bounds have been replaced since."""
        bounds = self.relu_bounds[index]
        cached = self.lines.get(index)
        if cached is None or cached[0] is not bounds:
            lower_neg, _, slope_up, slope_low, _ = relaxation(*bounds)
            lines = ringed(torch.stack([slope_low, slope_up - slope_low, -lower_neg * slope_up], dim=1))
            self.lines[index] = cached = (bounds, lines)
        return cached[1]


def ringed(maps: Tensor) -> Tensor:
    """Maps [B, *K, H, W] as channels-last [B, H + 2, W + 2, *K] with a ring of zeros."""
    padded = F.pad(maps, (1, 1, 1, 1))
    order = (0, padded.dim() - 2, padded.dim() - 1) + tuple(range(1, padded.dim() - 2))
    return padded.permute(order).contiguous()


def concretize(context: WindowContext, window: Window, center: Tensor, radius: Tensor) -> Tensor:
    """``min over the box of Σ A·x`` per row [P]: ``A·center − |A|·radius`` on each row's window
    (the ring reads zeros, so coefficients outside the input count for nothing)."""
    values = context.gather(ringed(torch.stack([center, radius], dim=1)), window)  # [P, h, w, 2, C]
    A = window.A.permute(0, 2, 3, 1)  # [P, h, w, C]
    return (A * values[..., 0, :] - A.abs() * values[..., 1, :]).flatten(1).sum(1)


def unit_windows(shape: tuple[int, ...], neurons: Tensor, dtype: torch.dtype) -> tuple[Window, tuple[Tensor, Tensor]]:
    """Windows of ``+e_n`` and ``−e_n`` for each flat neuron index n of a [C, H, W] map (rows
    ``[:P]`` and ``[P:]``), and the neurons' positions (row, col) for both halves."""
    channels, height, width = shape
    count = len(neurons)
    channel, row, col = neurons // (height * width), (neurons // width) % height, neurons % width
    A = torch.zeros(2 * count, channels, 1, 1, dtype=dtype, device=neurons.device)
    signs = torch.ones(2 * count, dtype=dtype, device=neurons.device)
    signs[count:] = -1
    A[torch.arange(2 * count, device=neurons.device), channel.repeat(2), 0, 0] = signs
    return Window(A, (1, 1), (0, 0), True), (row.repeat(2), col.repeat(2))
