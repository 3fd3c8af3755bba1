"""CROWN and CROWN-IBP intersected with IBP (``intersect_ibp=True``, what ``fastcert verify`` uses):
sound (sampling and PGD on every model family; Wide-ResNet and ResNeXt in the slow suite), never
looser than IBP at any ReLU input or margin, so every example IBP certifies stays certified, and per
example independent of the rest of the batch. (Not asserted: being at least as tight as plain
CROWN; tighter intermediate bounds change the adaptive ReLU slopes, which usually but not always
tightens the final bound.)
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from soundness import (
    DTYPE,
    FAMILIES,
    LAYERS,
    check_sound,
    random_box,
    randomize_bn,
    single_thread,  # noqa: F401  (the harness's autouse fixture, here too)
)
from test_crown_soundness import SLOW, _mixed_net
from torch import nn

from fastcert.method.bounds import bound_pass
from fastcert.method.bounds.crown import BackwardPass, _exact_under_ibp
from fastcert.method.bounds.ops import BatchNormOp
from fastcert.method.bounds.plan import plan_for
from fastcert.method.losses import certified, spec_matrix
from fastcert.method.models import build

METHODS = ("crown-ibp", "crown")


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_layer_bounds_are_sound(layer: str, mode: str) -> None:
    make, shape, exact = LAYERS[layer]
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(make(), nn.Flatten()).to(DTYPE), seed=1).train(mode == "train")
    x, x_lower, x_upper = random_box(shape, 0.5, seed=2)
    check_sound(model, x, x_lower, x_upper, exact=exact and layer != "relu", method="crown", intersect_ibp=True)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_mixed_network_is_sound_and_tighter_than_ibp(mode: str, method: str) -> None:
    torch.manual_seed(0)
    model = randomize_bn(_mixed_net().to(DTYPE), seed=3).train(mode == "train")
    x, x_lower, x_upper = random_box((3, 2, 7, 7), 0.3, seed=4)
    C = spec_matrix(torch.tensor([0, 3, 1]), 4, dtype=DTYPE)
    result = check_sound(model, x, x_lower, x_upper, C=C, method=method, intersect_ibp=True)
    if mode == "eval":  # not vacuous: the backward pass gains something over IBP here
        assert (result.lower - bound_pass(model, x, x_lower, x_upper, C=C).lower).mean() > 0


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize(
    ("name", "dataset"),
    [pytest.param(name, dataset, marks=() if name == "cnn7" else SLOW) for name, dataset in FAMILIES],
)
def test_model_bounds_are_sound(name: str, dataset: str, mode: str) -> None:
    """Full CROWN intersected with IBP on CNN-7, Wide-ResNet and ResNeXt (float32, margins)."""
    torch.manual_seed(0)
    model = randomize_bn(build(name, dataset, width=0.0625), seed=4).train(mode == "train")
    channels, size = (1, 28) if dataset == "mnist" else (3, 32)
    x, x_lower, x_upper = random_box((2, channels, size, size), 0.02, seed=5, dtype=torch.float32)
    C = spec_matrix(torch.tensor([0, 3]), 10, dtype=torch.float32)
    result = check_sound(model, x, x_lower, x_upper, C=C, effort=0.5, method="crown", intersect_ibp=True)
    assert result.lower.shape == (2, 9) and (result.upper > result.lower).all()


def _ibp_trained_like(name: str, dataset: str, seed: int) -> nn.Module:
    """A random network whose IBP bounds are comparatively tight (small weights in later layers
    make IBP certify some examples, as on IBP-trained networks), in eval mode."""
    torch.manual_seed(seed)
    model = randomize_bn(build(name, dataset, width=0.0625), seed=seed).eval()
    return model


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("name", "dataset"), [("cnn7", "mnist"), ("cnn7", "cifar10"), ("resnext", "cifar10")])
def test_never_looser_than_ibp_and_certifies_a_superset(name: str, dataset: str, method: str) -> None:
    model = _ibp_trained_like(name, dataset, seed=7)
    channels, size = (1, 28) if dataset == "mnist" else (3, 32)
    x = torch.randn((4, channels, size, size), generator=torch.Generator().manual_seed(8))
    radius = torch.tensor([1e-4, 1e-3, 3e-3, 1e-2]).view(4, 1, 1, 1)  # IBP certifies the narrow boxes only
    x_lower, x_upper = x - radius, x + radius
    with torch.no_grad():
        labels = model(x).argmax(1)  # margins around the clean prediction: some certifiable
        C = spec_matrix(labels, 10, dtype=torch.float32)
        ibp = bound_pass(model, x, x_lower, x_upper, C=C)
        tight = bound_pass(model, x, x_lower, x_upper, C=C, method=method, intersect_ibp=True)
    assert (tight.lower >= ibp.lower).all() and (tight.upper <= ibp.upper).all()
    for (lower, upper), (ibp_lower, ibp_upper) in zip(tight.pre_activation, ibp.pre_activation):
        assert (lower >= ibp_lower).all() and (upper <= ibp_upper).all()
    assert certified(ibp.lower).any() and not certified(ibp.lower).all(), "the check needs both kinds"
    assert (certified(tight.lower) >= certified(ibp.lower)).all()
    assert (tight.lower > ibp.lower).any()  # CROWN adds something where IBP is loose


def test_each_example_is_bounded_as_if_alone() -> None:
    """The IBP-unstable neurons are a union over the batch, yet no example's bounds depend on it."""
    model = _ibp_trained_like("cnn7", "mnist", seed=9)
    x, x_lower, x_upper = random_box((4, 1, 28, 28), 0.01, seed=10, dtype=torch.float64)
    model = model.double()
    C = spec_matrix(torch.tensor([1, 2, 3, 4]), 10, dtype=torch.float64)
    with torch.no_grad():
        together = bound_pass(model, x, x_lower, x_upper, C=C, method="crown", intersect_ibp=True)
        for i in range(4):
            part = slice(i, i + 1)
            alone = bound_pass(
                model, x[part], x_lower[part], x_upper[part], C=C[part], method="crown", intersect_ibp=True
            )
            torch.testing.assert_close(alone.lower, together.lower[part], rtol=1e-9, atol=1e-9)


def test_values_ibp_bounds_exactly() -> None:
    """One Linear/Conv from the input (BN and Flatten around it) is exact under IBP; a second is not."""
    model = nn.Sequential(
        nn.BatchNorm2d(1), nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 25, 3)
    )
    plan = plan_for(model)
    assert _exact_under_ibp(plan) == {0, 1, 2, 3}
    chain = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Linear(3, 2), nn.ReLU())
    assert _exact_under_ibp(plan_for(chain)) == {0, 1, 2}


def test_skipped_first_layer_matches_its_crown_bounds() -> None:
    """Skipping the backward pass where IBP is exact loses nothing: CROWN gives the same bounds there."""
    model = randomize_bn(_mixed_net().to(DTYPE), seed=3).eval()
    x, x_lower, x_upper = random_box((3, 2, 7, 7), 0.3, seed=4)
    ibp = bound_pass(model, x, x_lower, x_upper)
    assert ibp.context is not None
    first_ibp = ibp.pre_activation[0]
    backward = BackwardPass(model, ibp.context, x_lower, x_upper)
    backward.tighten_intermediate()
    torch.testing.assert_close(backward.pre_activation[0], first_ibp, rtol=1e-10, atol=1e-10)


def test_each_relu_input_is_within_the_interval_pass_over_the_tightened_bounds_before_it() -> None:
    """Intersected CROWN takes its IBP bounds of a ReLU input from an interval pass over the bounds
    already tightened before it (as auto_LiRPA's reference bounds), not from the first traversal
    alone: every ReLU input lies within conv→BN of the box of the previous tightened ReLU, which
    is tighter than the traversal's somewhere; BatchNorm statistics are not taken again."""
    model = _ibp_trained_like("cnn7", "mnist", seed=7).train()
    x = torch.rand((3, 1, 28, 28), generator=torch.Generator().manual_seed(9))
    x_lower, x_upper = (x - 0.03).clamp(0, 1), (x + 0.03).clamp(0, 1)
    with torch.no_grad():
        ibp = bound_pass(model, x, x_lower, x_upper)
        assert ibp.context is not None
        backward = BackwardPass(model, ibp.context, x_lower, x_upper)
        backward.tighten_intermediate(intersect_ibp=True)
    batch_norms = [m for m in model if isinstance(m, nn.BatchNorm2d)]
    assert all(int(bn.num_batches_tracked) == 1 for bn in batch_norms)  # the traversal's update only
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    affine = [ibp.context.bn_affine[op.index] for op in backward.plan.ops if isinstance(op, BatchNormOp)]
    tighter = False
    for k in range(len(convs) - 1):
        lower, upper = (bound.clamp(min=0) for bound in backward.pre_activation[k])
        conv, (scale, shift) = convs[k + 1], affine[k + 1]
        center = F.conv2d((upper + lower) / 2, conv.weight, conv.bias, conv.stride, conv.padding)
        radius = F.conv2d((upper - lower) / 2, conv.weight.abs(), None, conv.stride, conv.padding)
        center, radius = (
            center * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1),
            radius * scale.abs().view(1, -1, 1, 1),
        )
        next_lower, next_upper = backward.pre_activation[k + 1]
        assert (next_lower >= center - radius - 1e-5).all() and (next_upper <= center + radius + 1e-5).all()
        ibp_lower, ibp_upper = ibp.pre_activation[k + 1]
        tighter |= bool(((center - radius > ibp_lower + 1e-4) | (center + radius < ibp_upper - 1e-4)).any())
    assert tighter
