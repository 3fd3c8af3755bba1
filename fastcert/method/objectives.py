"""Training objectives: one bound pass on a batch that yields everything a training step needs.

An objective returns the clean logits (train-mode BN statistics), the robust loss, the margin lower
bounds and every ReLU's pre-activation bounds, so nothing is forwarded twice. A run trains with the
objective its method names in the method table (:mod:`fastcert.methods`): :func:`ibp_objective` for
Vanilla IBP and Ours, :func:`fastcert.method.crown_ibp.crown_ibp_objective` for the CROWN-IBP
baseline. ``OBJECTIVES`` maps each objective name to a function of the run's ``loss_fusion`` that
returns the objective (:func:`objective_for`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import NamedTuple, Protocol, TypeAlias

from torch import Tensor, nn

from fastcert.method.bounds import bound_pass
from fastcert.method.crown_ibp import CrownIBPBatch, crown_ibp_objective
from fastcert.method.losses import robust_ce, spec_matrix


class BatchBounds(NamedTuple):
    """What an objective returns for one (sub-)batch.

    ``margin_lower`` is None when the method bounds the loss directly (loss fusion): the batch then
    has no verified error.
    """

    clean: Tensor
    robust_loss: Tensor
    margin_lower: Tensor | None
    pre_activation: list[tuple[Tensor, Tensor]]


# CROWN-IBP's batch has the same fields plus its IBP traversal (``ibp``); the loop reads only these.
BatchResult: TypeAlias = BatchBounds | CrownIBPBatch


class Objective(Protocol):
    """One bound pass on a batch: clean logits, robust loss, margin bounds, ReLU input bounds.

    ``eps_fraction`` = ε/ε_max (CROWN-IBP mixes CROWN and IBP with it); ``training`` = False is
    the test pass (no loss fusion there).
    """

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        x_lower: Tensor,
        x_upper: Tensor,
        *,
        num_classes: int,
        eps_fraction: float,
        training: bool,
    ) -> BatchResult: ...


def ibp_objective(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    x_lower: Tensor,
    x_upper: Tensor,
    *,
    num_classes: int,
    eps_fraction: float,
    training: bool,
) -> BatchBounds:
    """IBP with the spec matrix folded into the last layer (Vanilla IBP and Ours)."""
    del eps_fraction, training  # IBP is the same at every ε and in both passes
    C = spec_matrix(y, num_classes, dtype=x.dtype)
    result = bound_pass(model, x, x_lower, x_upper, C=C, method="ibp")
    return BatchBounds(result.clean, robust_ce(result.lower), result.lower, list(result.pre_activation))


def _ibp(loss_fusion: bool) -> Objective:
    del loss_fusion  # IBP's fused bound equals the robust CE of its margins (fastcert.method.crown_ibp)
    return ibp_objective


def _crown_ibp(loss_fusion: bool) -> Objective:
    return partial(crown_ibp_objective, loss_fusion=loss_fusion)


OBJECTIVES: dict[str, Callable[[bool], Objective]] = {"ibp": _ibp, "crown-ibp": _crown_ibp}


def objective_for(name: str, *, loss_fusion: bool) -> Objective:
    """The objective named ``name`` (a method's ``objective`` in fastcert.methods), with or without
    loss fusion."""
    if name not in OBJECTIVES:
        raise ValueError(f"unknown objective {name!r}; valid: {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name](loss_fusion)
