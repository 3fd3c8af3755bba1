"""The result of one bound traversal, in its own module so that the traversal (:mod:`.engine`) and
the backward passes that refine it (:mod:`.crown`) both use it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from .ops import Bounds, PassContext


@dataclass
class BoundPass:
    """Result of :func:`bound_pass`.

    ``clean``: logits [B, K] of the clean batch (train-mode BN used and updated its batch
    statistics here). ``lower``/``upper``: bounds of the logits [B, K], or of ``C @ logits``
    [B, M] when a spec matrix was given. ``pre_activation``: ``(lower, upper)`` of every ReLU
    input in forward order (for the regularizers and ReLU statistics). ``context``: the traversal's
    state (BN maps, ReLU input bounds) that a CROWN backward pass refines (:mod:`.crown`).
    """

    clean: Tensor
    lower: Tensor
    upper: Tensor
    pre_activation: list[Bounds]
    context: PassContext | None = field(default=None, repr=False)
