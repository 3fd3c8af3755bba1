"""Soundness of CROWN-IBP and CROWN bounds, with the IBP soundness harness of
``tests/soundness.py`` (sampled points, random vertices and PGD on every output against a frozen
copy of the model, BN in eval and train mode, every ReLU input checked against the bounds in use).

Single affine layers are bounded exactly by a backward pass, so there the attack must also reach
the bounds. CROWN-IBP runs on all three model families; full CROWN, which costs a backward pass
per hidden neuron, on single layers and a small residual / grouped / strided network by default
and on the model families in the slow suite.
"""

from __future__ import annotations

import os

import pytest
import torch
from soundness import (
    DTYPE,
    FAMILIES,
    LAYERS,
    check_sound,
    random_box,
    randomize_bn,
    single_thread,  # noqa: F401  (the harness's autouse fixture, here too)
)
from torch import nn

from fastcert.method.bounds import bound_pass
from fastcert.method.losses import spec_matrix
from fastcert.method.models import Residual, build

CROWN_METHODS = ("crown-ibp", "crown")  # the bound methods with a backward (linear) pass
NOT_EXACT = {"relu"}  # a single ReLU's linear relaxation is not tight; every affine layer is
SLOW = (
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("FASTCERT_SLOW") != "1", reason="slow (full CROWN): set FASTCERT_SLOW=1"),
)


@pytest.mark.parametrize("method", CROWN_METHODS)
@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layer_bounds_are_sound(layer: str, mode: str, method: str) -> None:
    make, shape, exact = LAYERS[layer]
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(make(), nn.Flatten()).to(DTYPE), seed=1).train(mode == "train")
    x, x_lower, x_upper = random_box(shape, 0.5, seed=2)
    check_sound(model, x, x_lower, x_upper, exact=exact and layer not in NOT_EXACT, method=method)


def _mixed_net() -> nn.Sequential:
    """Strided, grouped and dilated convs, both residual kinds, BN in both dims, a hidden FC."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        Residual(
            nn.Sequential(
                nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2),
                nn.BatchNorm2d(4),
                nn.ReLU(),
                nn.Conv2d(4, 4, 1),
                nn.BatchNorm2d(4),
            )
        ),
        Residual(
            nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6)),
            nn.Sequential(nn.Conv2d(4, 6, 1, stride=2), nn.BatchNorm2d(6)),
        ),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, 4),
    )


@pytest.mark.parametrize("method", CROWN_METHODS)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_mixed_network_bounds_are_sound(mode: str, method: str) -> None:
    torch.manual_seed(0)
    model = randomize_bn(_mixed_net().to(DTYPE), seed=3).train(mode == "train")
    x, x_lower, x_upper = random_box((3, 2, 7, 7), 0.3, seed=4)
    C = spec_matrix(torch.tensor([0, 3, 1]), 4, dtype=DTYPE)
    result = check_sound(model, x, x_lower, x_upper, C=C, method=method)
    if mode == "eval":  # the backward pass must gain something here, or the check is vacuous
        assert (result.lower - bound_pass(model, x, x_lower, x_upper, C=C).lower).mean() > 0


def _family_cases() -> list[object]:
    cases = []
    for method in CROWN_METHODS:
        for name, dataset in FAMILIES:
            marks = SLOW if method == "crown" else ()
            cases.append(pytest.param(name, dataset, method, marks=marks, id=f"{method}-{name}-{dataset}"))
    return cases


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize(("name", "dataset", "method"), _family_cases())
def test_model_bounds_are_sound(name: str, dataset: str, method: str, mode: str) -> None:
    """CNN-7, Wide-ResNet and ResNeXt at small width (smaller for full CROWN), float32 (the
    training dtype), margins."""
    torch.manual_seed(0)
    width = 0.125 if method == "crown-ibp" else 0.0625
    model = randomize_bn(build(name, dataset, width=width), seed=4).train(mode == "train")
    channels, size = (1, 28) if dataset == "mnist" else (3, 32)
    batch = 3 if method == "crown-ibp" else 2
    x, x_lower, x_upper = random_box((batch, channels, size, size), 0.02, seed=5, dtype=torch.float32)
    C = spec_matrix(torch.tensor([0, 3, 9][:batch]), 10, dtype=torch.float32)
    result = check_sound(model, x, x_lower, x_upper, C=C, effort=0.5, method=method)
    assert result.lower.shape == (batch, 9) and (result.upper > result.lower).all()
