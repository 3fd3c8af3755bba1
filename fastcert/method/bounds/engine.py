"""The traversal: one pass over the compiled plan computes clean logits and IBP bounds together."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .crown import refine
from .ops import Flow, LinearOp, PassContext, cpu_channels_last
from .plan import plan_for
from .result import BoundPass

BOUND_METHODS = ("ibp", "crown-ibp", "crown")


def bound_pass(
    model: nn.Module,
    x: Tensor,
    x_lower: Tensor,
    x_upper: Tensor,
    C: Tensor | None = None,
    method: str = "ibp",
    intersect_ibp: bool = False,
    chunk_elements: int | None = None,
) -> BoundPass:
    """Clean forward and bounds over the box ``[x_lower, x_upper]`` in one traversal.

    In train mode every BatchNorm takes the batch statistics of the clean activations (kept in
    the autograd graph), updates its running stats once, as ``nn.BatchNorm`` would, and the
    bounds reuse those statistics; in eval mode the running stats are used. ``C`` [B, M, K] is
    folded into the last Linear layer when the model ends with one (tighter than applying it to
    logit intervals). ``intersect_ibp`` (CROWN-IBP, CROWN): bounds never looser than IBP's, CROWN
    run only where IBP leaves neurons unstable (:mod:`.crown`); off, CROWN is auto_LiRPA's.
    ``chunk_elements``: CROWN's chunk size (:meth:`.crown.BackwardPass.tighten_intermediate`).
    """
    _check_method(method)
    if method != "ibp":  # CROWN-IBP / CROWN: one IBP traversal, then backward passes over it
        ibp = bound_pass(model, x, x_lower, x_upper, C=C)
        return refine(model, ibp, x_lower, x_upper, C, method, intersect_ibp, chunk_elements)
    _check_inputs(x, x_lower, x_upper, C)
    plan = plan_for(model)
    flow, stacked = _input_flow(x, x_lower, x_upper)
    ctx = PassContext(batch=x.shape[0], stacked=stacked)
    ops = plan.ops
    fold = C is not None and len(ops) > 0 and plan.output == len(ops) and isinstance(ops[-1], LinearOp)
    run = ops[:-1] if fold else ops
    values: list[Flow | None] = [flow] + [None] * len(ops)
    for op in run:
        values[op.index + 1] = op.interval(ctx, *[_live(values, i) for i in op.src])
        for i in plan.release[op.index]:
            values[i] = None
    if fold:
        last = ops[-1]
        assert C is not None and isinstance(last, LinearOp)
        clean, center, radius = last.interval_spec(ctx, _live(values, last.src[0]), C)
    else:
        out = _live(values, plan.output)
        clean, center, radius = ctx.clean(out), ctx.center(out), out.radius
        if C is not None:
            center, radius = _apply_spec(C, center, radius)
    if radius is None:
        return BoundPass(clean, center, center, ctx.pre_activation, ctx)
    return BoundPass(clean, center - radius, center + radius, ctx.pre_activation, ctx)


def _live(values: list[Flow | None], index: int) -> Flow:
    """Plan value ``index``, which the release schedule must not have dropped yet."""
    value = values[index]
    assert value is not None, f"plan value {index} read after it was released"
    return value


def compute_bounds(
    model: nn.Module,
    x: Tensor,
    x_lower: Tensor,
    x_upper: Tensor,
    method: str = "ibp",
    C: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(lower, upper)`` of the logits or of ``C @ logits``; see :func:`bound_pass`.

    The clean batch ``x`` is needed for train-mode BN statistics, so a train-mode call also
    updates the running stats, as the clean forward that precedes auto_LiRPA's
    ``compute_bounds`` does.
    """
    result = bound_pass(model, x, x_lower, x_upper, C=C, method=method)
    return result.lower, result.upper


def _check_method(method: str) -> None:
    if method not in BOUND_METHODS:
        raise ValueError(f"unknown bound method {method!r}; valid: {', '.join(BOUND_METHODS)}")


def _check_inputs(x: Tensor, x_lower: Tensor, x_upper: Tensor, C: Tensor | None) -> None:
    if x_lower.shape != x.shape or x_upper.shape != x.shape:
        raise ValueError(
            f"x {tuple(x.shape)}, x_lower {tuple(x_lower.shape)} and x_upper "
            f"{tuple(x_upper.shape)} must have the same shape"
        )
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch [B, ...], got shape {tuple(x.shape)}")
    if C is not None and (C.dim() != 3 or C.shape[0] != x.shape[0]):
        raise ValueError(f"C must be [B, M, K] with B = {x.shape[0]}, got shape {tuple(C.shape)}")


def _input_flow(x: Tensor, x_lower: Tensor, x_upper: Tensor) -> tuple[Flow, bool]:
    """The input node: clean rows and box center stacked, radius = half width (None if zero).

    A degenerate box (ε = 0) that sits on ``x`` gives the clean rows only, so the traversal is a
    plain clean forward; its bounds are then the clean logits.
    """
    width = x_upper - x_lower
    narrowest, widest = torch.aminmax(width)
    if narrowest < 0:
        raise ValueError("x_lower must be <= x_upper everywhere")
    if widest == 0 and not (x_lower.requires_grad or x_upper.requires_grad):
        if torch.equal(x_lower, x):
            return Flow(cpu_channels_last(x), None), False
        return Flow(cpu_channels_last(torch.cat([x, x_lower])), None), True
    center = (x_upper + x_lower) / 2
    return Flow(cpu_channels_last(torch.cat([x, center])), cpu_channels_last(width / 2)), True


def _apply_spec(C: Tensor, center: Tensor, radius: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """``C @ z`` for a model that does not end in a Linear layer: C as a per-example linear map."""
    if center.dim() != 2 or center.shape[1] != C.shape[2]:
        raise ValueError(f"C {tuple(C.shape)} does not match the model output {tuple(center.shape)}")
    new_center = torch.bmm(C, center.unsqueeze(-1)).squeeze(-1)
    if radius is None:
        return new_center, None
    return new_center, torch.bmm(C.abs(), radius.unsqueeze(-1)).squeeze(-1)
