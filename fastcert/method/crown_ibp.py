"""The CROWN-IBP training objective, the paper's main baseline (Zhang et al. 2020 in the loss-fusion
version of Xu et al. 2020, the paper's Sec. 4.1; authors' ``get_bound_loss`` with ``--method crown-ibp``).

One IBP traversal (clean logits, train-mode BN statistics and running-stat update, IBP margins,
every ReLU's pre-activation bounds) is always made; its bounds are mixed with CROWN-IBP bounds
with the factor ``f = (ε_max − ε)/ε_max``, which falls from 1 (pure CROWN-IBP) at the start of
the ramp to 0 (pure IBP) at ε_max, where the CROWN pass is skipped (authors: computed iff
``f ≥ 1e-5``). With loss fusion (training batches only) the mixed quantity is the shifted upper
bound of ``Σ_j exp(z_j − z_y)`` and the loss ``mean(log ū + m)``; the batch then has no margin
bounds. Test passes are never fused: their margins are ``f·CROWN-IBP + (1 − f)·IBP``.

When the CROWN pass is skipped the loss is the IBP robust CE of the margins, fused or not: the
fused IBP bound equals it exactly (``log(exp(−m) + Σ exp(−lb_j − m)) + m``), so the margins are
returned and verified error stays available at ε_max.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor, nn

from fastcert.method.bounds import (
    BackwardPass,
    BoundPass,
    bound_pass,
    fused_crown_ibp,
    fused_ibp,
)
from fastcert.method.bounds.fusion import SLOPE_FLOOR
from fastcert.method.bounds.ops import Bounds
from fastcert.method.losses import robust_ce, spec_matrix

CROWN_THRESHOLD = 1e-5  # authors: the CROWN pass runs iff factor >= 1e-5
FRACTION_SLACK = 1e-9  # ε/ε_max computed in floating point may overshoot [0, 1] by rounding


class CrownIBPBatch(NamedTuple):
    """One batch of the objective: the fields of ``fastcert.method.objectives.BatchBounds`` plus ``ibp``.

    ``margin_lower`` is None for a fused batch; ``ibp`` is the IBP traversal (its ``lower`` are
    the IBP margin bounds, ``pre_activation`` the IBP ReLU input bounds, as the regularizers and
    ReLU statistics use).
    """

    clean: Tensor
    robust_loss: Tensor
    margin_lower: Tensor | None
    pre_activation: list[Bounds]
    ibp: BoundPass


def mixing_factor(eps_fraction: float) -> float:
    """``f = 1 − ε/ε_max`` for ``eps_fraction = ε/ε_max`` in [0, 1]."""
    if not -FRACTION_SLACK <= eps_fraction <= 1 + FRACTION_SLACK:
        raise ValueError(f"eps_fraction (eps / eps_max) must lie in [0, 1], got {eps_fraction}")
    return min(max(1.0 - eps_fraction, 0.0), 1.0)


def crown_ibp_objective(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    x_lower: Tensor,
    x_upper: Tensor,
    *,
    num_classes: int,
    eps_fraction: float,
    training: bool,
    loss_fusion: bool = True,
) -> CrownIBPBatch:
    """Robust loss of CROWN-IBP (mixed with IBP by ``1 − eps_fraction``) on one batch.

    Matches ``fastcert.method.objectives.Objective`` once ``loss_fusion`` is bound (``functools.partial``).
    The exp-chord slope floor of the fused bound is on in train mode only, as in auto_LiRPA.
    """
    C = spec_matrix(y, num_classes, dtype=x.dtype)
    ibp = bound_pass(model, x, x_lower, x_upper, C=C)
    factor = mixing_factor(eps_fraction)
    if factor < CROWN_THRESHOLD:
        return CrownIBPBatch(ibp.clean, robust_ce(ibp.lower), ibp.lower, ibp.pre_activation, ibp)
    assert ibp.context is not None
    backward = BackwardPass(model, ibp.context, x_lower, x_upper)
    if loss_fusion and training:
        floor = SLOPE_FLOOR if model.training else 0.0
        crown = fused_crown_ibp(backward, y, ibp.lower, ibp.upper, slope_floor=floor)
        fused = crown.mixed(fused_ibp(ibp.lower, ibp.upper), factor)
        return CrownIBPBatch(ibp.clean, fused.log_ub.mean(), None, ibp.pre_activation, ibp)
    lower = factor * backward.lower(C) + (1 - factor) * ibp.lower
    return CrownIBPBatch(ibp.clean, robust_ce(lower), lower, ibp.pre_activation, ibp)
