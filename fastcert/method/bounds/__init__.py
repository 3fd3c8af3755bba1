"""fastcert's bound engine: clean logits and IBP bounds of ``torch.nn`` models in one traversal.

Why fastcert has its own engine: auto_LiRPA, the library the paper used, has a single
PyPI release (0.3, 2022) that pins torch<1.13 and does not import on torch 2.x; its current
0.7.x line is not on PyPI; and no other installable library bounds Conv2d and BatchNorm
networks. Owning the engine also buys speed: auto_LiRPA needs a clean forward followed by a
separate bound computation over a traced graph, whereas here one loop over a compiled plan runs
the clean batch and the IBP center through the same kernel call (batch-stacked) and the radius
through ``|W|``, with train-mode BatchNorm statistics taken once from the clean rows and reused
by the bounds. Results are checked against auto_LiRPA's numbers (``tests/fixtures/auto_lirpa``).

Layout (for extending with CROWN-IBP / CROWN / loss fusion):

* :mod:`.ops` — one class per operation (Linear, Conv2d, BatchNorm, ReLU, Flatten, residual
  Add) with its ``interval`` rule; a ``backward`` (linear relaxation) rule goes into the same
  class. :class:`~.ops.PassContext` holds per-traversal state (pre-activation bounds, the BN
  affine maps actually used).
* :mod:`.plan` — compiles a model into a flat list of ops with their input indices, cached per
  model; unsupported modules raise ``TypeError`` with their path.
* :mod:`.engine` — the traversal, :func:`bound_pass` and :func:`compute_bounds`.
* :mod:`.result` — :class:`BoundPass`, what a traversal returns (the engine and the backward passes
  both use it; neither imports the other for it).
* :mod:`.crown` — backward (CROWN) passes over an IBP traversal: CROWN-IBP, full CROWN.
* :mod:`.fusion` — loss fusion: one backward pass bounds ``Σ_j exp(z_j − z_y)``.
"""

from .crown import BackwardPass
from .engine import BOUND_METHODS, bound_pass, compute_bounds
from .fusion import FusedBound, fused_crown_ibp, fused_ibp
from .plan import Plan, compile_plan, plan_for
from .result import BoundPass

__all__ = [
    "BOUND_METHODS",
    "BackwardPass",
    "BoundPass",
    "FusedBound",
    "Plan",
    "bound_pass",
    "compile_plan",
    "compute_bounds",
    "fused_crown_ibp",
    "fused_ibp",
    "plan_for",
]
