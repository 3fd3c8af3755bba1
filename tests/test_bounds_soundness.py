"""Soundness of the IBP bounds: nothing reachable inside the input box leaves [lower, upper].

For each layer type and each model family, points of the box (uniform samples, random vertices
and the iterates of a short PGD attack on every output, both directions) are pushed through a
*frozen* copy of the model whose BatchNorms apply the per-channel affine maps of the bound pass
(eval: from the running stats; train: from the clean batch's statistics as the traversal computed
them; whether those equal torch's is tests/test_bounds_ibp.py's concern). Bounds are claims about
that network, so the check is free of the float32 rounding of two differently ordered statistics
computations. Every output and every ReLU input must lie within the bounds. For single layers that
IBP bounds exactly, the attack must also reach the bounds, so the check cannot pass with loose
bounds.
"""

from __future__ import annotations

import pytest
import torch
from soundness import (
    DTYPE,
    FAMILIES,
    LAYERS,
    check_sound,
    random_box,
    randomize_bn,
    single_thread,  # noqa: F401  (autouse: tiny tensors, shared cores)
)
from torch import nn

from fastcert.method.models import build


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layer_bounds_are_sound(layer: str, mode: str) -> None:
    make, shape, exact = LAYERS[layer]
    torch.manual_seed(0)
    layer_module = make()
    model = randomize_bn(nn.Sequential(layer_module, nn.Flatten()).to(DTYPE), seed=1).train(mode == "train")
    x, x_lower, x_upper = random_box(shape, 0.5, seed=2)
    check_sound(model, x, x_lower, x_upper, exact=exact)


def test_spec_on_a_model_without_final_linear_is_sound() -> None:
    """C applied after a non-Linear last layer (no folding possible)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU()).to(DTYPE)
    x, x_lower, x_upper = random_box((3, 5), 0.5, seed=3)
    C = torch.randn(3, 2, 4, dtype=DTYPE)
    check_sound(model, x, x_lower, x_upper, C=C)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize(("name", "dataset"), FAMILIES)
def test_model_bounds_are_sound(name: str, dataset: str, mode: str) -> None:
    """Small widths, float32 (the training dtype; tolerance 1e-5 relative), margins folded."""
    torch.manual_seed(0)
    model = randomize_bn(build(name, dataset, width=0.125), seed=4).train(mode == "train")
    channels, size = (1, 28) if dataset == "mnist" else (3, 32)
    x, x_lower, x_upper = random_box((3, channels, size, size), 0.02, seed=5, dtype=torch.float32)
    labels = torch.tensor([0, 3, 9])
    eye = torch.eye(10)
    C = torch.stack([eye[y] - eye[[j for j in range(10) if j != y]] for y in labels.tolist()])
    result = check_sound(model, x, x_lower, x_upper, C=C)
    assert result.lower.shape == (3, 9) and result.clean.shape == (3, 10)
    assert (result.upper > result.lower).all()
