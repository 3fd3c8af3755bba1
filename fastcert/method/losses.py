"""Specification matrix, robust cross-entropy and verified error (the paper's L_rob of Eq. (10),
Sec. 3.4; verified error: App. C).

The bound engine bounds the K−1 margins ``z_y − z_j`` directly (C folded into the last Linear),
so everything here works on the margin lower bounds ``lb`` [B, K−1] rather than on logit
intervals. The robust loss is the cross-entropy of the worst-case logits ``[0, −lb]`` with
label 0, computed as a logsumexp so that margins of any size stay finite.
"""

from __future__ import annotations

import torch
from torch import Tensor

REDUCTIONS = ("mean", "none")


def spec_matrix(labels: Tensor, num_classes: int, dtype: torch.dtype | None = None) -> Tensor:
    """Return C [B, K−1, K] whose rows are ``e_y − e_j`` for every j ≠ y, j increasing.

    ``C @ logits`` are the margins ``z_y − z_j``; all of them positive means correctly classified.
    """
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    out_of_range = (labels < 0) | (labels >= num_classes)
    if out_of_range.any():
        bad = labels[out_of_range].unique().tolist()
        raise ValueError(f"labels must lie in [0, {num_classes}), got {bad}")
    dtype = dtype or torch.get_default_dtype()
    eye = torch.eye(num_classes, dtype=dtype, device=labels.device)
    every_row = eye[labels].unsqueeze(1) - eye.unsqueeze(0)  # [B, K, K]: e_y − e_j for all j
    keep = torch.arange(num_classes, device=labels.device) != labels.unsqueeze(1)  # [B, K]
    return every_row[keep].view(labels.shape[0], num_classes - 1, num_classes)


def _check_margins(margin_lower: Tensor) -> None:
    if margin_lower.dim() != 2:
        raise ValueError(f"margin_lower must be [B, K-1], got shape {tuple(margin_lower.shape)}")


def robust_ce(margin_lower: Tensor, reduction: str = "mean") -> Tensor:
    """``log(1 + Σ_j exp(−lb_j))`` per example, = CE of ``[0, −lb]`` with label 0."""
    _check_margins(margin_lower)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    padded = torch.cat([margin_lower.new_zeros(margin_lower.shape[0], 1), -margin_lower], dim=1)
    per_example = torch.logsumexp(padded, dim=1)
    return per_example.mean() if reduction == "mean" else per_example


def certified(margin_lower: Tensor) -> Tensor:
    """bool [B]: verified correct iff every margin lower bound is strictly positive.

    NaN bounds (a diverged model) count as not verified.
    """
    _check_margins(margin_lower)
    return (margin_lower > 0).all(dim=1)
