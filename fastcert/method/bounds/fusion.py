"""Loss fusion (Xu et al. 2020): an upper bound of ``s = Σ_j exp(z_j − z_y)`` per example, so that
the robust cross-entropy ``log s`` costs one backward pass whatever the number of classes K.

Without fusion CROWN-IBP bounds the K−1 margins, a backward pass with M = K−1 specs (memory and
time grow with K). Fusion bounds the loss itself: each ``exp(s_j − m)``, with ``s_j = z_j − z_y``
in its IBP interval ``[l_j, u_j] = [−ub_margin_j, −lb_margin_j]`` and the detached per-example
shift ``m = max_j u_j`` (≥ 0, the j = y term is exp(0)), lies below its chord
``k_j (s_j − l_j) + exp(l_j − m)``, ``k_j = (exp(u_j − m) − exp(l_j − m)) / max(u_j − l_j, 1e-8)``;
the sum of chords is ONE linear function of the logits, ``Σ_j k_j (z_j − z_y)`` plus a constant,
whose upper bound takes a single (M = 1) CROWN pass. The shift keeps every exponential ≤ 1 (no
overflow for margins of −1e4), and the bound returned is the shifted one, ``ū ≥ Σ_j exp(s_j − m)``;
the robust CE is ``log ū + m``. This is auto_LiRPA's BoundExp loss-fusion rule, including its
slope floor ``k_j ≥ 1e-8``, which it applies only when the parameters carry gradients (train
mode): pass ``slope_floor=0`` in eval mode to reproduce its eval-mode numbers.

The interval ``[l_j, u_j]`` comes from the IBP margins (C folded into the last Linear); the IBP
fused bound ``Σ_j exp(u_j − m)`` equals the non-fused IBP robust CE exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from fastcert.method.losses import other_classes

from .crown import BackwardPass

SLOPE_FLOOR = 1e-8  # auto_LiRPA's floor on the exp chord slope when it carries a gradient
WIDTH_FLOOR = 1e-8  # auto_LiRPA's floor on u_j − l_j in the chord slope


@dataclass
class FusedBound:
    """``ub_shifted`` [B] ≥ ``Σ_j exp(z_j − z_y − shift)``; ``shift`` [B] is detached.

    ``margins`` is the IBP margin lower bound the shift was computed from: two bounds made from
    the same tensor share the shift, which :meth:`mixed` checks without reading the device.
    """

    ub_shifted: Tensor
    shift: Tensor
    margins: Tensor = field(repr=False)

    @property
    def log_ub(self) -> Tensor:
        """Per-example robust CE bound ``log ū + m`` = log of an upper bound of ``Σ_j exp(z_j − z_y)``."""
        return torch.log(self.ub_shifted) + self.shift

    def mixed(self, other: FusedBound, weight: float) -> FusedBound:
        """``weight·self + (1 − weight)·other`` of two bounds with the same shift (CROWN-IBP's mixing)."""
        if self.margins is not other.margins:
            raise ValueError("fused bounds can only be mixed when they come from the same IBP margins (one shift)")
        return FusedBound(weight * self.ub_shifted + (1 - weight) * other.ub_shifted, self.shift, self.margins)


def _exp_intervals(margin_lower: Tensor, margin_upper: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(l, u, m)``: the intervals of ``z_j − z_y`` (j ≠ y) and the detached shift [B]."""
    if margin_lower.dim() != 2 or margin_lower.shape != margin_upper.shape:
        raise ValueError(
            f"margin bounds must both be [B, K-1], got {tuple(margin_lower.shape)} and {tuple(margin_upper.shape)}"
        )
    lower, upper = -margin_upper, -margin_lower
    shift = upper.detach().max(dim=1).values.clamp(min=0)
    return lower, upper, shift


def fused_ibp(margin_lower: Tensor, margin_upper: Tensor) -> FusedBound:
    """IBP loss-fusion bound ``ū = exp(−m) + Σ_{j≠y} exp(u_j − m)`` from IBP margin bounds [B, K−1]."""
    _, upper, shift = _exp_intervals(margin_lower, margin_upper)
    ub = torch.exp(-shift) + torch.exp(upper - shift.unsqueeze(1)).sum(dim=1)
    return FusedBound(ub, shift, margin_lower)


def fused_crown_ibp(
    backward: BackwardPass,
    labels: Tensor,
    margin_lower: Tensor,
    margin_upper: Tensor,
    slope_floor: float = SLOPE_FLOOR,
) -> FusedBound:
    """CROWN-IBP loss-fusion bound: exp chords over the IBP intervals, one M = 1 backward pass.

    ``margin_lower``/``margin_upper`` [B, K−1] are the IBP bounds of ``z_y − z_j`` in
    :func:`fastcert.method.losses.spec_matrix` order (j ≠ y increasing), from the traversal that
    ``backward`` refines.
    """
    lower, upper, shift = _exp_intervals(margin_lower, margin_upper)
    batch, others = lower.shape
    if labels.shape != (batch,):
        raise ValueError(f"labels must be [B] = [{batch}], got {tuple(labels.shape)}")
    m = shift.unsqueeze(1)
    exp_lower, exp_upper = torch.exp(lower - m), torch.exp(upper - m)
    slope = (exp_upper - exp_lower) / (upper - lower).clamp(min=WIDTH_FLOOR)
    if slope_floor > 0:
        slope = slope.clamp(min=slope_floor)
    constant = torch.exp(-shift) + (exp_lower - slope * lower).sum(dim=1)
    # Σ_j k_j (z_j − z_y) = −(coefficients below)·z with coefficient −k_j on z_j and Σ k on z_y;
    # its upper bound is minus the lower bound of (coefficients)·z.
    classes = others + 1
    coefficients = torch.zeros(batch, classes, dtype=slope.dtype, device=slope.device)
    coefficients = coefficients.scatter(1, other_classes(labels, classes), -slope)
    coefficients = coefficients.scatter(1, labels.unsqueeze(1), slope.sum(dim=1, keepdim=True))
    upper_linear = -backward.lower(coefficients.unsqueeze(1)).squeeze(1)
    return FusedBound(upper_linear + constant, shift, margin_lower)
