"""Verified error of a trained model under IBP, CROWN-IBP or CROWN (library side of ``fastcert verify``).

The paper reports IBP-verified errors (its CROWN-IBP models are tested with pure IBP at ε_max);
CROWN-IBP and full CROWN give tighter certificates of the same model. Evaluation is in eval mode
(running BN statistics, so the result does not depend on the batch size), without gradients, on
the whole split in order; a model is verified on an example iff every margin lower bound
``z_y − z_j`` (C folded into the last layer) is positive. Full CROWN costs one backward pass per
hidden neuron chunk: use small batches for it. The bounds are computed in float32 without TF32
(:func:`fastcert.method.precision.certification`), whatever the process-wide setting.

Torch and the bound engine are imported on the first call: ``fastcert verify --help`` lists the
methods and their default batch sizes from here without importing them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from torch import nn

    from fastcert.datasets import DatasetInfo
    from fastcert.run.data import Split

DEFAULT_BATCH = {"ibp": 256, "crown-ibp": 64, "crown": 8}


class Verification(TypedDict):
    """Fractions in [0, 1] over ``n`` examples."""

    standard_err: float
    verified_err: float
    n: int


def verify(
    model: nn.Module,
    split: Split,
    info: DatasetInfo,
    eps: float,
    method: str = "ibp",
    batch_size: int | None = None,
) -> Verification:
    """Standard and verified error of ``model`` on ``split`` at ``eps`` (pixel units) with ``method``.

    The model is put in eval mode for the evaluation and returned to its previous mode afterwards.
    """
    import torch

    from fastcert.method.bounds import BOUND_METHODS, bound_pass
    from fastcert.method.losses import certified, spec_matrix
    from fastcert.method.perturbation import input_box
    from fastcert.method.precision import certification

    if method not in BOUND_METHODS:
        raise ValueError(f"unknown verification method {method!r}; valid: {', '.join(BOUND_METHODS)}")
    if len(split) == 0:
        raise ValueError("cannot verify on an empty split")
    dtype = next(model.parameters()).dtype
    was_training = model.training
    model.eval()
    wrong = unverified = total = 0
    try:
        with torch.no_grad(), certification():
            for x, y in split.batches(batch_size or DEFAULT_BATCH[method], shuffle=False, augment=False):
                x = x.to(dtype)
                x_lower, x_upper = input_box(x, eps, info.mean, info.std)
                C = spec_matrix(y, info.num_classes, dtype=dtype)
                result = bound_pass(model, x, x_lower, x_upper, C=C, method=method)
                wrong += int((result.clean.argmax(1) != y).sum())
                unverified += int((~certified(result.lower)).sum())
                total += len(y)
    finally:
        model.train(was_training)
    return {"standard_err": wrong / total, "verified_err": unverified / total, "n": total}
