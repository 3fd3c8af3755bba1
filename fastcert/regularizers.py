"""Warmup regularizers and ReLU statistics (SPEC §2 "Warmup regularizers").

Inputs are the clipped input box ``(x_lower, x_upper)`` and ``pre_activation``, the list of
``(lower, upper)`` IBP bounds of every ReLU input in forward order. Nothing is detached: the
losses are differentiable functions of the bounds, as in the authors' code.

The authors' ``L_relu`` relies on IEEE arithmetic for its edge cases (a layer whose term comes
out NaN or ±inf is dropped from the sum but still counted in the average). Here those cases are
decided explicitly from the zero denominators, with safe denominators in the discarded branch,
so the value is the authors' and the gradient stays finite (the authors' gradient can be NaN in
the same cases). Everything stays on the device: no host synchronisation per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

Bounds = tuple[Tensor, Tensor]
TERMS = ("tightness", "relu", "std")
_CLAMP = 1e-12  # the authors' only guard against division by zero


def _check(pre_activation: Sequence[Bounds], tau: float | None = None) -> None:
    if len(pre_activation) == 0:
        raise ValueError("pre_activation is empty: the model has no ReLU to regularize")
    for i, (lower, upper) in enumerate(pre_activation):
        if lower.shape != upper.shape:
            raise ValueError(
                f"pre_activation[{i}]: lower {tuple(lower.shape)} and upper "
                f"{tuple(upper.shape)} differ in shape"
            )
    if tau is not None and not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")


def _mean_half_width(lower: Tensor, upper: Tensor) -> Tensor:
    """Ê(Δ): the mean half-width of a box over every element (batch included)."""
    return ((upper - lower) / 2).mean()


def input_tightness(x_lower: Tensor, x_upper: Tensor) -> Tensor:
    """Ê(Δ0): mean half-width of the (clipped) input box over all B·C·H·W elements."""
    return _mean_half_width(x_lower, x_upper)


def tightness_loss(
    x_lower: Tensor, x_upper: Tensor, pre_activation: Sequence[Bounds], tau: float = 0.5
) -> Tensor:
    """``(1/m) Σ_i ReLU(τ − Ê(Δ0)/max(Ê(Δi), 1e−12)) / τ``: penalizes layers that widen bounds."""
    _check(pre_activation, tau)
    width0 = input_tightness(x_lower, x_upper)
    terms = [
        F.relu(tau - width0 / _mean_half_width(lower, upper).clamp(min=_CLAMP)) / tau
        for lower, upper in pre_activation
    ]
    return torch.stack(terms).mean()


def _flip(ratio: Tensor) -> Tensor:
    """``min(r, 1/max(r, 1e−12))``: a ratio and its inverse are equally balanced."""
    return torch.minimum(ratio, 1 / ratio.clamp(min=_CLAMP))


def _safe(denominator: Tensor) -> Tensor:
    """The denominator where it is non-zero, 1 elsewhere (that branch is discarded)."""
    return torch.where(denominator == 0, torch.ones_like(denominator), denominator)


def _relu_layer(lower: Tensor, upper: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """One layer of ``L_relu``: ``(term, counted)``, both 0-dim tensors.

    α = Σ_active c / Σ_inactive (−c) and β = Σ_active (c−m_c)² / Σ_inactive (c−m_c)², each
    flipped to ≤ 1. The authors' IEEE outcomes, decided explicitly:
    * no inactive neuron: α's denominator is 0, α = −inf or NaN, the layer is not counted;
    * β's denominator 0 with a positive numerator: β = +inf, flipped to 0;
    * β = 0/0: the layer is not counted;
    * no active neuron (with inactive ones): α = β = 0, the term is 2.
    A term that is still not finite (non-finite bounds) is not counted either.
    """
    center = (upper + lower) / 2
    active, inactive = lower > 0, upper < 0
    zero = center.new_zeros(())
    active_sum = torch.where(active, center, zero).sum()
    inactive_sum = -torch.where(inactive, center, zero).sum()
    deviation = (center - center.mean()) ** 2
    active_var = torch.where(active, deviation, zero).sum()
    inactive_var = torch.where(inactive, deviation, zero).sum()

    alpha = _flip(active_sum / _safe(inactive_sum))
    beta = torch.where(inactive_var == 0, zero, _flip(active_var / _safe(inactive_var)))
    term = (F.relu(tau - alpha) + F.relu(tau - beta)) / tau
    counted = (inactive_sum != 0) & ((inactive_var != 0) | (active_var != 0)) & term.isfinite()
    return term, counted


def relu_loss(pre_activation: Sequence[Bounds], tau: float = 0.5) -> Tensor:
    """``L_relu``: average over all m layers of the counted layer terms (see ``_relu_layer``).

    It pushes the active and inactive neurons to balance (in summed centers α and in spread β),
    which keeps unstable neurons few without killing a layer.
    """
    _check(pre_activation, tau)
    total = pre_activation[0][0].new_zeros(())
    for lower, upper in pre_activation:
        term, counted = _relu_layer(lower, upper, tau)
        total = total + torch.where(counted, term, torch.zeros_like(term))
    return total / len(pre_activation)


def std_loss(pre_activation: Sequence[Bounds], tau: float = 0.5) -> Tensor:
    """``L_std``: mean over layers of ``ReLU(τ − std(c))/τ`` (unbiased std of all centers).

    The authors' optional term, off in their final configuration.
    """
    _check(pre_activation, tau)
    terms = [F.relu(tau - ((upper + lower) / 2).std()) / tau for lower, upper in pre_activation]
    return torch.stack(terms).mean()


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


def relu_state(pre_activation: Sequence[Bounds]) -> ReluState:
    """Per-layer ReLU state fractions over all B·neurons (one host synchronisation in all)."""
    _check(pre_activation)
    with torch.no_grad():
        counts = torch.stack(
            [torch.stack([(lower > 0).sum(), (upper < 0).sum()]) for lower, upper in pre_activation]
        ).tolist()
    sizes = [lower.numel() for lower, _ in pre_activation]
    return ReluState(
        active=[a / n for (a, _), n in zip(counts, sizes)],
        inactive=[i / n for (_, i), n in zip(counts, sizes)],
        unstable=[(n - a - i) / n for (a, i), n in zip(counts, sizes)],
    )


def layer_tightness(pre_activation: Sequence[Bounds]) -> list[float]:
    """Ê(Δi) of every ReLU input, in forward order (Figure 1's per-layer widths)."""
    _check(pre_activation)
    with torch.no_grad():
        return torch.stack([_mean_half_width(lo, up) for lo, up in pre_activation]).tolist()


def log_tightness_ratio(
    x_lower: Tensor, x_upper: Tensor, pre_activation: Sequence[Bounds]
) -> float:
    """``log(Ê(Δm)/Ê(Δ0))`` with m the last ReLU layer (Table 6): bound growth through the net."""
    _check(pre_activation)
    with torch.no_grad():
        last = _mean_half_width(*pre_activation[-1])
        return torch.log(last / input_tightness(x_lower, x_upper)).item()


def warmup_regularizer(
    x_lower: Tensor,
    x_upper: Tensor,
    pre_activation: Sequence[Bounds],
    terms: Sequence[str] = ("tightness", "relu"),
    tau: float = 0.5,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Return ``(Σ selected terms, every term)``; all terms are returned for logging, as the
    authors log them whether or not they are used. λ is applied by the caller."""
    unknown = sorted(set(terms) - set(TERMS))
    if unknown:
        raise ValueError(f"unknown regularizer term(s) {unknown}; choose from {list(TERMS)}")
    parts = {
        "tightness": tightness_loss(x_lower, x_upper, pre_activation, tau),
        "relu": relu_loss(pre_activation, tau),
        "std": std_loss(pre_activation, tau),
    }
    total = parts["tightness"].new_zeros(())
    for name in dict.fromkeys(terms):
        total = total + parts[name]
    return total, parts
