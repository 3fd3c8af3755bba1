"""Warmup regularizers and ReLU statistics (the paper's Sec. 3.4).

Inputs are the clipped input box ``(x_lower, x_upper)`` and ``pre_activation``, the list of
``(lower, upper)`` IBP bounds of every ReLU input in forward order. Nothing is detached: the
losses are differentiable functions of the bounds, as in the authors' code.

The authors' ``L_relu`` relies on IEEE arithmetic for its edge cases (a layer whose term comes
out NaN or ±inf is dropped from the sum but still counted in the average). Here those cases are
decided explicitly from the zero denominators, with safe denominators in the discarded branch,
so the value is the authors' and the gradient stays finite (the authors' gradient can be NaN in
the same cases). Everything stays on the device: no host synchronisation per layer.

Speed: every term is a function of a few sums per layer (:class:`_BoundSums`), so the bounds,
which are as large as the network's activations, are read once in the forward pass (in
cache-sized slices on CPU) and once more, to write both gradients, in the backward pass; the
per-layer formulas then run on ``[m]`` vectors. Autograd over masked full-size tensors
(``torch.where`` forward and backward) cost about 25 % of an IBP training step on CPU; this costs
about 5 % (``benchmarks/README.md``). A warmup batch that also logs the ReLU state can get both
from one pass (:func:`warmup_regularizer_with_counts`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from fastcert.vocabulary import REGULARIZER_TERMS

Bounds = tuple[Tensor, Tensor]
_CLAMP = 1e-12  # the authors' only guard against division by zero
_EXACT_COUNT = 1 << 24  # float32 counts a chunk of 0/1 values this long exactly
_CPU_CHUNK = 1 << 18  # elements per slice on CPU (see _spans)


def _check(pre_activation: Sequence[Bounds], tau: float | None = None, name: str = "pre_activation") -> None:
    """Shapes pair up; one floating dtype and one device throughout (the sums share buffers)."""
    if len(pre_activation) == 0:
        raise ValueError(f"{name} is empty: the model has no ReLU to regularize")
    first = pre_activation[0][0]
    if not first.is_floating_point():
        raise ValueError(f"{name}: bounds must be floating point, got {first.dtype}")
    for i, (lower, upper) in enumerate(pre_activation):
        if lower.shape != upper.shape:
            raise ValueError(f"{name}[{i}]: lower {tuple(lower.shape)} and upper {tuple(upper.shape)} differ in shape")
        for tensor in (lower, upper):
            if tensor.dtype != first.dtype or tensor.device != first.device:
                raise ValueError(
                    f"{name}[{i}]: {tensor.dtype} on {tensor.device} differs from "
                    f"{first.dtype} on {first.device} of {name}[0]"
                )
    if tau is not None and not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")


def _flat_pair(lower: Tensor, upper: Tensor) -> Bounds:
    """Both bounds as 1-D tensors in ``lower``'s memory order.

    Every quantity here is a sum over all elements, so the order is free: walking memory order
    makes this a view for any dense layout (channels-last included) instead of a copy. ``upper``
    follows the same order, so the two stay aligned element by element.
    """
    order = _memory_order(lower)
    return lower.permute(order).reshape(-1), upper.permute(order).reshape(-1)


def _memory_order(tensor: Tensor) -> list[int]:
    """The dimensions from the largest stride to the smallest."""
    return sorted(range(tensor.dim()), key=tensor.stride, reverse=True)


def _empty_aligned(like: Tensor) -> Bounds:
    """``(new tensor shaped like like, its 1-D view aligned with _flat_pair(like, ...))``.

    Writing through the view puts each value on the element it belongs to. The tensor is laid
    out in ``like``'s memory order and is not itself a view, so autograd can add another gradient
    into it in place (it copies views first).
    """
    order = _memory_order(like)
    strides = [0] * like.dim()
    step = 1
    for k in reversed(order):
        strides[k] = step
        step *= like.shape[k]
    tensor = like.new_empty_strided(like.shape, strides)
    return tensor, tensor.permute(order).reshape(-1)


def _relu_masks(lower: Tensor, upper: Tensor, out: Tensor) -> Tensor:
    """Write ``[l > 0; u < 0]`` as 0/1 into the rows of ``out`` [2, N] and return it.

    0/1 values in the bounds' dtype turn masked sums into products: comparisons into a float
    buffer are several times faster on CPU than bool masks and ``torch.where``.
    """
    torch.gt(lower, 0, out=out[0])
    torch.lt(upper, 0, out=out[1])
    return out


def _spans(n: int, device: torch.device) -> list[tuple[int, int]]:
    """Slices of a layer's ``n`` elements: cache-sized on CPU, so the temporaries of a slice stay
    in cache between operations (the bounds themselves are read once per pass); a GPU takes the
    whole layer (up to 2^24 elements, so that float32 still counts a slice's masks exactly) in one
    kernel per operation."""
    size = _CPU_CHUNK if device.type == "cpu" else _EXACT_COUNT
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _scratch(like: Tensor, n: int) -> Tensor:
    """Six rows as long as the largest slice of ``n`` elements (see :func:`_rows`)."""
    return like.new_empty(6, _spans(n, like.device)[0][1] if n else 0)


def _rows(scratch: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(masks [2, size], x or d [size], temporary [size], temporary [2, size])`` for one slice."""
    return scratch[:2, :size], scratch[2, :size], scratch[3, :size], scratch[4:, :size]


def _relu_counts(lower: Tensor, upper: Tensor, scratch: Tensor) -> Tensor:
    """``[|l > 0|, |u < 0|]`` of a flat layer, exact (float64 sum of exact per-slice counts)."""
    spans = _spans(lower.numel(), lower.device)
    part = lower.new_empty(len(spans), 2)
    for k, (start, stop) in enumerate(spans):
        masks = _relu_masks(lower[start:stop], upper[start:stop], _rows(scratch, stop - start)[0])
        torch.sum(masks, 1, out=part[k])
    return part.double().sum(0)


def _layer_moments(lower: Tensor, upper: Tensor, centers: bool, scratch: Tensor) -> tuple[Tensor, Tensor]:
    """``([Σ(u − l), Σx, Σ_A x, Σ_I x, Σ d², Σ_A d², Σ_I d²], [|A|, |I|])`` of a flat layer, with
    ``d = x − mean(x)``, in one pass over the bounds; the counts are exact (float64 sums of exact
    slice counts). Without ``centers`` only ``Σ(u − l)`` is computed (the counts are 0).

    Each slice sums its squared deviations from its own means (of all, of A, of I elements),
    computed in cache; Chan et al.'s update
    ``Σ_S (x − m)² = Σ_slices [Σ_S (x − m_S)² + n_S (m_S − m)²]`` then gives the deviations from
    the layer mean: every term is non-negative, so nothing cancels (unlike
    ``Σx² − 2mΣx + m²N``), and the bounds are read once.
    """
    spans = _spans(lower.numel(), lower.device)
    part = lower.new_empty(len(spans), 10 if centers else 1)
    for k, (start, stop) in enumerate(spans):
        low, up, row = lower[start:stop], upper[start:stop], part[k]
        masks, x, tmp, masked = _rows(scratch, stop - start)
        torch.sum(torch.sub(up, low, out=tmp), 0, out=row[0])
        if not centers:
            continue
        # row: Σ(u − l), Σx, Σ_A x, Σ_I x, size, |A|, |I|, squares (3); fill_ takes the size as a
        # kernel argument (an assignment would copy a host tensor to the device)
        row[4].fill_(stop - start)
        torch.sum(torch.add(low, up, out=x), 0, out=row[1])
        torch.sum(_relu_masks(low, up, masks), 1, out=row[5:7])
        torch.sum(torch.mul(masks, x, out=masked), 1, out=row[2:4])
        masked.addcmul_(masks, -(row[2:4] / row[5:7].clamp(min=1))[:, None])
        torch.sum(masked.mul_(masked), 1, out=row[8:10])
        torch.sum(torch.sub(x, row[1] / row[4], out=tmp).mul_(tmp), 0, out=row[7])
    if not centers:
        return part.sum(0), part.new_zeros(2, dtype=torch.float64)
    mean = part[:, 1].sum() / lower.numel()
    spread = part[:, 4:7] * (part[:, 1:4] / part[:, 4:7].clamp(min=1) - mean) ** 2
    return torch.cat([part[:, :4].sum(0), (part[:, 7:] + spread).sum(0)]), part[:, 5:7].double().sum(0)


def _layer_grads(lower: Tensor, upper: Tensor, coef: Tensor, scratch: Tensor) -> Bounds:
    """``(∂/∂l, ∂/∂u)`` of a layer from ``coef = [mean, c_A, c_I, s_A, s_I, s, shift, 2 g_W]``:
    ``∂/∂u = A (c_A + s_A d) + I (c_I + s_I d) + s d + shift``, ``∂/∂l = ∂/∂u − 2 g_W``."""
    mean, c_active, c_inactive, s_active, s_inactive, slope, shift, width = coef
    (grad_lower, flat_lower), (grad_upper, flat_upper) = _empty_aligned(lower), _empty_aligned(lower)
    lower, upper = _flat_pair(lower, upper)
    for start, stop in _spans(lower.numel(), lower.device):
        low, up = lower[start:stop], upper[start:stop]
        g_low, g_up = flat_lower[start:stop], flat_upper[start:stop]
        masks, d, tmp, _ = _rows(scratch, stop - start)
        _relu_masks(low, up, masks)
        torch.add(low, up, out=d).sub_(mean)
        torch.mul(masks[0], s_active, out=tmp).addcmul_(masks[1], s_inactive).add_(slope)
        torch.mul(masks[0], c_active, out=g_up).addcmul_(masks[1], c_inactive).add_(shift)
        g_up.addcmul_(tmp, d)
        torch.sub(g_up, width, out=g_low)
    return grad_lower, grad_upper


class _BoundSums(torch.autograd.Function):
    """The per-layer sums that every term needs, over bounds ``l0, u0, l1, u1, ...``.

    Output ``sums`` [m, 6], per layer, with centers ``c = (l + u)/2``, their mean ``m_c``,
    A = ``l > 0`` and I = ``u < 0``: ``Ê(Δ) = mean((u − l)/2)``, ``Σ_A c``, ``Σ_I (−c)``,
    ``Σ_A (c − m_c)²``, ``Σ_I (c − m_c)²`` and the unbiased variance of c (without ``centers``
    only ``Ê(Δ)`` is computed, the rest is 0).

    The work is on ``x = l + u = 2c`` and ``d = x − mean(x)``, scaled at the end (see
    :func:`_layer_moments`). All sums are torch's cascade sums of elementwise products (BLAS dot
    products lost up to 1e-3 relative precision on offset data).

    The backward pass recomputes the masks and ``d`` (cheaper than keeping them) and writes
    ``∂/∂u = ∂/∂x + g_W/(2N)`` and ``∂/∂l = ∂/∂x − g_W/(2N)`` directly, with
    ``∂/∂x_j = A_j (g_A + g_VA d_j)/2 + I_j (−g_I + g_VI d_j)/2 + g_V d_j/(2(N−1)) + k`` and
    ``k = −(g_VA Σ_A d + g_VI Σ_I d)/(2N)``, the mean's share (``Σ d = 0`` is left out, as in
    torch's own variance backward); ``g_*`` are the incoming gradients of the six sums. Without
    ``centers`` the gradients are expanded scalars (no memory).

    Second output, no gradient: ``[|A|, |I|]`` per layer [m, 2] (float64, exact; 0 without
    ``centers``), for :class:`ReluState` without another pass.
    """

    @staticmethod
    def forward(ctx: Any, centers: bool, *bounds: Tensor) -> tuple[Tensor, Tensor]:
        pairs = list(zip(bounds[::2], bounds[1::2]))
        scratch = _scratch(bounds[0], max(lower.numel() for lower, _ in pairs))
        rows, moments, counts = [], [], []
        for lower, upper in pairs:
            lower, upper = _flat_pair(lower, upper)
            n = lower.numel()
            sums, count = _layer_moments(lower, upper, centers, scratch)
            counts.append(count)
            width = sums[0] / (2 * n)
            if not centers:
                rows.append(torch.cat([width[None], width.new_zeros(5)]))
                continue
            _, total, active, inactive, square, active_sq, inactive_sq = sums
            n_active, n_inactive = count.to(sums.dtype)
            mean = total / n
            variance = square * _variance_scale(n)
            rows.append(torch.stack([width, active / 2, -inactive / 2, active_sq / 4, inactive_sq / 4, variance]))
            moments.append(torch.stack([mean, active - n_active * mean, inactive - n_inactive * mean]))
        ctx.centers = centers
        ctx.save_for_backward(*bounds)
        ctx.moments = torch.stack(moments) if centers else None
        count = torch.stack(counts)
        ctx.mark_non_differentiable(count)
        return torch.stack(rows), count

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor, _: Tensor | None) -> tuple[Tensor | None, ...]:
        bounds = ctx.saved_tensors
        pairs = list(zip(bounds[::2], bounds[1::2]))
        scratch = _scratch(bounds[0], max(lower.numel() for lower, _ in pairs))
        grads: list[Tensor | None] = [None]
        for j, (lower, upper) in enumerate(pairs):
            n = lower.numel()
            g_width = grad[j, 0] / (2 * n)
            if not ctx.centers:
                grads += [(-g_width).expand(lower.shape), g_width.expand(lower.shape)]
                continue
            g_active, g_inactive, g_active_sq, g_inactive_sq, g_var = grad[j, 1:]
            mean, active_dev, inactive_dev = ctx.moments[j]  # mean(x), Σ_A d, Σ_I d
            shift = g_width - (g_active_sq * active_dev + g_inactive_sq * inactive_dev) / (2 * n)
            coef = torch.stack(
                [
                    mean,
                    g_active / 2,
                    -g_inactive / 2,
                    g_active_sq / 2,
                    g_inactive_sq / 2,
                    2 * _variance_scale(n) * g_var,
                    shift,
                    2 * g_width,
                ]
            )
            grads += _layer_grads(lower, upper, coef, scratch)
        return tuple(grads)


def _variance_scale(n: int) -> float:
    """Σ d² → unbiased variance of c = d/2 (NaN for a single element, as torch's ``std``)."""
    return 1 / (4 * (n - 1)) if n > 1 else math.nan


@dataclass(frozen=True)
class _LayerSums:
    """Per-layer statistics of the bounds, ``[m]`` tensors (see :class:`_BoundSums`)."""

    mean_half_width: Tensor  # Ê(Δi) = mean (u − l)/2
    active_sum: Tensor  # Σ_active c
    inactive_sum: Tensor  # Σ_inactive (−c)
    active_var: Tensor  # Σ_active (c − m_c)²
    inactive_var: Tensor  # Σ_inactive (c − m_c)²
    variance: Tensor  # unbiased variance of c
    counts: Tensor = field(kw_only=True)  # [m, 2]: |active|, |inactive| (float64, no gradient)


def _layer_sums(pre_activation: Sequence[Bounds], centers: bool) -> _LayerSums:
    sums, counts = _BoundSums.apply(centers, *(bound for pair in pre_activation for bound in pair))
    return _LayerSums(*sums.unbind(1), counts=counts)


def input_tightness(x_lower: Tensor, x_upper: Tensor) -> Tensor:
    """Ê(Δ0): mean half-width of the (clipped) input box over all B·C·H·W elements."""
    _check([(x_lower, x_upper)], name="input box (x_lower, x_upper)")
    return _layer_sums([(x_lower, x_upper)], centers=False).mean_half_width[0]


def _tightness(width0: Tensor, sums: _LayerSums, tau: float) -> Tensor:
    return (F.relu(tau - width0 / sums.mean_half_width.clamp(min=_CLAMP)) / tau).mean()


def tightness_loss(x_lower: Tensor, x_upper: Tensor, pre_activation: Sequence[Bounds], tau: float) -> Tensor:
    """``(1/m) Σ_i ReLU(τ − Ê(Δ0)/max(Ê(Δi), 1e−12)) / τ``: penalizes layers that widen bounds."""
    _check(pre_activation, tau)
    width0 = input_tightness(x_lower, x_upper)
    return _tightness(width0, _layer_sums(pre_activation, centers=False), tau)


def _flip(ratio: Tensor) -> Tensor:
    """``min(r, 1/max(r, 1e−12))``: a ratio and its inverse are equally balanced."""
    return torch.minimum(ratio, 1 / ratio.clamp(min=_CLAMP))


def _safe(denominator: Tensor) -> Tensor:
    """The denominator where it is non-zero, 1 elsewhere (that branch is discarded)."""
    return torch.where(denominator == 0, torch.ones_like(denominator), denominator)


def _relu(sums: _LayerSums, tau: float) -> Tensor:
    """``L_relu`` from the layer sums: the mean over all m layers of the counted layer terms.

    Per layer, with centers c = (l+u)/2: α = Σ_active c / Σ_inactive (−c) and
    β = Σ_active (c−m_c)² / Σ_inactive (c−m_c)², each flipped to ≤ 1; term
    ``(ReLU(τ−α) + ReLU(τ−β))/τ``. The authors' IEEE outcomes, decided explicitly:
    * no inactive neuron: α's denominator is 0, α = −inf or NaN, the layer is not counted;
    * β's denominator 0 with a positive numerator: β = +inf, flipped to 0;
    * β = 0/0: the layer is not counted;
    * no active neuron (with inactive ones): α = β = 0, the term is 2.
    A term that is still not finite (non-finite bounds) is not counted either.
    """
    active_sum, inactive_sum, active_var, inactive_var = (
        sums.active_sum,
        sums.inactive_sum,
        sums.active_var,
        sums.inactive_var,
    )
    zero = active_sum.new_zeros(())
    alpha = _flip(active_sum / _safe(inactive_sum))
    beta = torch.where(inactive_var == 0, zero, _flip(active_var / _safe(inactive_var)))
    term = (F.relu(tau - alpha) + F.relu(tau - beta)) / tau
    counted = (inactive_sum != 0) & ((inactive_var != 0) | (active_var != 0)) & term.isfinite()
    return torch.where(counted, term, zero).sum() / len(term)


def relu_loss(pre_activation: Sequence[Bounds], tau: float) -> Tensor:
    """``L_relu``: average over all m layers of the counted layer terms (see ``_relu``).

    It pushes the active and inactive neurons to balance (in summed centers α and in spread β),
    which keeps unstable neurons few without killing a layer.
    """
    _check(pre_activation, tau)
    return _relu(_layer_sums(pre_activation, centers=True), tau)


def _std(sums: _LayerSums, tau: float) -> Tensor:
    """Mean over layers of ``ReLU(τ − std(c))/τ``; a zero std has a zero gradient, as in torch."""
    variance = sums.variance
    positive = variance > 0
    std = torch.where(positive, torch.where(positive, variance, 1).sqrt(), variance * 0)
    return (F.relu(tau - std) / tau).mean()


@dataclass(frozen=True)
class ReluState:
    """Fractions of active (l>0), inactive (u<0) and unstable ReLU inputs, one entry per layer."""

    active: list[float]
    inactive: list[float]
    unstable: list[float]

    @property
    def mean_active(self) -> float:
        return sum(self.active) / len(self.active)

    @property
    def mean_inactive(self) -> float:
        return sum(self.inactive) / len(self.inactive)

    @property
    def mean_unstable(self) -> float:
        return sum(self.unstable) / len(self.unstable)


@dataclass(frozen=True)
class ReluCounts:
    """``counts`` [m, 2] (float64, on the bounds' device): ``|l > 0|`` and ``|u < 0|`` of each of
    the m layers, of ``sizes`` elements. Kept on the device so that a training loop can average the
    fractions over an epoch and read them once (:meth:`fractions`), instead of once per batch."""

    counts: Tensor
    sizes: tuple[int, ...]

    def fractions(self) -> Tensor:
        """``[active, inactive, unstable]`` fractions [3, m] (float64, on the device); the same
        double-precision arithmetic as :meth:`state`, so equal to its values bit for bit."""
        size = _size_column(self.sizes, self.counts.device)
        active, inactive = self.counts.unbind(1)
        return torch.stack([active / size, inactive / size, (size - active - inactive) / size])

    def state(self) -> ReluState:
        """The fractions on the host (one host synchronisation)."""
        rows = self.counts.tolist()
        return ReluState(
            active=[a / n for (a, _), n in zip(rows, self.sizes)],
            inactive=[i / n for (_, i), n in zip(rows, self.sizes)],
            unstable=[(n - a - i) / n for (a, i), n in zip(rows, self.sizes)],
        )


@functools.lru_cache(maxsize=16)
def _size_column(sizes: tuple[int, ...], device: torch.device) -> Tensor:
    """``sizes`` as a float64 tensor on ``device``, made once (a copy to a GPU waits for it)."""
    return torch.tensor(sizes, dtype=torch.float64, device=device)


def relu_counts(pre_activation: Sequence[Bounds]) -> ReluCounts:
    """Per-layer counts of active and inactive ReLU inputs over all B·neurons, on the device."""
    _check(pre_activation)
    with torch.no_grad():
        scratch = _scratch(pre_activation[0][0], max(lower.numel() for lower, _ in pre_activation))
        counts = [_relu_counts(*_flat_pair(lower, upper), scratch) for lower, upper in pre_activation]
    return ReluCounts(torch.stack(counts), tuple(lower.numel() for lower, _ in pre_activation))


def relu_state(pre_activation: Sequence[Bounds]) -> ReluState:
    """Per-layer ReLU state fractions over all B·neurons (one host synchronisation in all)."""
    return relu_counts(pre_activation).state()


def layer_tightness(pre_activation: Sequence[Bounds]) -> list[float]:
    """Ê(Δi) of every ReLU input, in forward order (Figure 1's per-layer widths)."""
    _check(pre_activation)
    with torch.no_grad():
        return _layer_sums(pre_activation, centers=False).mean_half_width.tolist()


def log_tightness_ratio(x_lower: Tensor, x_upper: Tensor, pre_activation: Sequence[Bounds]) -> float:
    """``log(Ê(Δm)/Ê(Δ0))`` with m the last ReLU layer (Table 6): bound growth through the net."""
    return log_tightness_ratio_tensor(x_lower, x_upper, pre_activation).item()


def log_tightness_ratio_tensor(x_lower: Tensor, x_upper: Tensor, pre_activation: Sequence[Bounds]) -> Tensor:
    """:func:`log_tightness_ratio` as a 0-d tensor on the bounds' device (no host synchronisation)."""
    _check(pre_activation)
    with torch.no_grad():
        last = _layer_sums(pre_activation[-1:], centers=False).mean_half_width[0]
        return torch.log(last / input_tightness(x_lower, x_upper))


def warmup_regularizer(
    x_lower: Tensor,
    x_upper: Tensor,
    pre_activation: Sequence[Bounds],
    terms: Sequence[str],
    tau: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Return ``(Σ selected terms, every term)``; all terms are returned for logging, as the
    authors log them whether or not they are used. λ is applied by the caller.

    The three terms share one pass over the bounds (:class:`_BoundSums`)."""
    total, parts, _ = _warmup(x_lower, x_upper, pre_activation, terms, tau)
    return total, parts


def warmup_regularizer_with_counts(
    x_lower: Tensor,
    x_upper: Tensor,
    pre_activation: Sequence[Bounds],
    terms: Sequence[str],
    tau: float,
) -> tuple[Tensor, dict[str, Tensor], ReluCounts]:
    """:func:`warmup_regularizer` and :func:`relu_counts` of the same bounds in one pass (a warmup
    batch needs both; the bounds are read once instead of twice)."""
    total, parts, sums = _warmup(x_lower, x_upper, pre_activation, terms, tau)
    return total, parts, ReluCounts(sums.counts, tuple(lower.numel() for lower, _ in pre_activation))


def _warmup(
    x_lower: Tensor, x_upper: Tensor, pre_activation: Sequence[Bounds], terms: Sequence[str], tau: float
) -> tuple[Tensor, dict[str, Tensor], _LayerSums]:
    unknown = sorted(set(terms) - set(REGULARIZER_TERMS))
    if unknown:
        raise ValueError(f"unknown regularizer term(s) {unknown}; choose from {list(REGULARIZER_TERMS)}")
    _check(pre_activation, tau)
    sums = _layer_sums(pre_activation, centers=True)
    parts = {
        "tightness": _tightness(input_tightness(x_lower, x_upper), sums, tau),
        "relu": _relu(sums, tau),
        "std": _std(sums, tau),
    }
    total = parts["tightness"].new_zeros(())
    for name in dict.fromkeys(terms):
        total = total + parts[name]
    return total, parts, sums
