"""IBP init (the paper's Sec. 3.3.1), the Table 5 initializations and the difference gain (Definition 1)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastcert.method.init import (
    GAIN_SCHEMES,
    closed_form_gain,
    empirical_gain,
    initialize,
    residual_input_layers,
)
from fastcert.method.models import build, classifier

# The next block's first conv and shortcut conv after every residual block (authors-code-notes
# §2.1 item 6); never the dense layer after Flatten.
ONE_BLOCK_PER_STAGE = {
    "layer2_0.branch.conv1",
    "layer2_0.shortcut.conv",
    "layer3_0.branch.conv1",
    "layer3_0.shortcut.conv",
}
RESNEXT_TINY = ONE_BLOCK_PER_STAGE | {
    "layer1_1.branch.conv1",
    "layer2_1.branch.conv1",
    "layer3_1.branch.conv1",
}


def affine_layers(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def fan_in(layer: nn.Module) -> int:
    if isinstance(layer, nn.Conv2d):
        k_h, k_w = layer.kernel_size
        return layer.in_channels // layer.groups * k_h * k_w
    return layer.in_features


def assert_std(weight: torch.Tensor, expected: float) -> None:
    """Sample std within 6 standard errors of ``expected`` (and mean near 0)."""
    count = weight.numel()
    assert weight.std().item() == pytest.approx(expected, rel=6 / math.sqrt(2 * count))
    assert abs(weight.mean().item()) < 6 * expected / math.sqrt(count)


@pytest.fixture(scope="module")
def models() -> dict[tuple[str, str], nn.Sequential]:
    torch.manual_seed(0)
    return {
        ("cnn7", "cifar10"): build("cnn7", "cifar10"),
        ("wide_resnet", "cifar10"): build("wide_resnet", "cifar10"),
        ("wide_resnet", "tinyimagenet"): build("wide_resnet", "tinyimagenet", width=0.25),
        ("resnext", "cifar10"): build("resnext", "cifar10"),
        ("resnext", "tinyimagenet"): build("resnext", "tinyimagenet"),
    }


@pytest.mark.parametrize(
    "key, expected",
    [
        (("cnn7", "cifar10"), set()),
        (("wide_resnet", "cifar10"), ONE_BLOCK_PER_STAGE),
        (("wide_resnet", "tinyimagenet"), ONE_BLOCK_PER_STAGE),
        (("resnext", "cifar10"), ONE_BLOCK_PER_STAGE),
        (("resnext", "tinyimagenet"), RESNEXT_TINY),
    ],
)
def test_residual_input_layers(models, key, expected) -> None:
    assert set(residual_input_layers(models[key])) == expected


def test_residual_input_layers_without_bn() -> None:
    model = build("resnext", "tinyimagenet", bn="none", width=0.25)
    assert set(residual_input_layers(model)) == RESNEXT_TINY


@pytest.mark.parametrize(
    "key",
    [("cnn7", "cifar10"), ("wide_resnet", "cifar10"), ("resnext", "tinyimagenet")],
)
def test_ibp_init_sigma_halving_and_untouched_parameters(models, key) -> None:
    model = models[key]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head = classifier(model)
    head_name = next(n for n, m in model.named_modules() if m is head)
    initialize(model, "ibp", generator=torch.Generator().manual_seed(3))
    halved = set(residual_input_layers(model))
    after = model.state_dict()
    for name, layer in affine_layers(model).items():
        if name == head_name:
            continue
        sigma = math.sqrt(2 * math.pi) / fan_in(layer)
        assert_std(layer.weight, sigma / 2 if name in halved else sigma)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    expected = {f"{n}.weight" for n in affine_layers(model) if n != head_name}
    assert changed == expected  # classifier, biases, BN parameters and buffers untouched


def test_ibp_weights_have_unit_difference_gain(models) -> None:
    """Definition 1 per layer: n/2 · mean|W| ≈ 1 (≈ 1/2 for halved layers)."""
    model = models[("resnext", "cifar10")]
    initialize(model, "ibp", generator=torch.Generator().manual_seed(4))
    halved = set(residual_input_layers(model))
    for name, layer in affine_layers(model).items():
        if layer is classifier(model):
            continue
        gain = fan_in(layer) / 2 * layer.weight.abs().mean().item()
        assert gain == pytest.approx(0.5 if name in halved else 1.0, rel=0.05)


# (std, bound) of each Table 5 distribution at fan-in n; bound None = unbounded.
DISTRIBUTIONS = {
    "xavier_uniform": lambda n: (1 / math.sqrt(3 * n), 1 / math.sqrt(n)),
    "xavier_normal": lambda n: (1 / math.sqrt(n), None),
    "kaiming_uniform": lambda n: (math.sqrt(2 / n), math.sqrt(6 / n)),
    "kaiming_normal": lambda n: (math.sqrt(2 / n), None),
}


@pytest.mark.parametrize("scheme", sorted(DISTRIBUTIONS))
def test_table5_distributions_without_halving(scheme) -> None:
    model = build("wide_resnet", "cifar10", width=0.25)
    head_before = classifier(model).weight.clone()
    initialize(model, scheme, generator=torch.Generator().manual_seed(5))
    for _name, layer in affine_layers(model).items():
        if layer is classifier(model):
            continue
        std, bound = DISTRIBUTIONS[scheme](fan_in(layer))
        assert_std(layer.weight, std)  # halved layers included: only IBP init halves
        if bound is not None:
            assert layer.weight.abs().max().item() <= bound
    assert torch.equal(classifier(model).weight, head_before)


def test_orthogonal_init() -> None:
    model = build("cnn7", "mnist", width=0.25)
    head_before = classifier(model).weight.clone()
    initialize(model, "orthogonal", generator=torch.Generator().manual_seed(6))
    for layer in affine_layers(model).values():
        if layer is classifier(model):
            continue
        rows = layer.weight.reshape(layer.weight.shape[0], -1)
        gram = rows @ rows.T if rows.shape[0] <= rows.shape[1] else rows.T @ rows
        assert torch.allclose(gram, torch.eye(gram.shape[0]), atol=1e-4)
    assert torch.equal(classifier(model).weight, head_before)


def test_default_keeps_constructor_init() -> None:
    model = build("resnext", "mnist", width=0.25)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    initialize(model, "default", generator=torch.Generator().manual_seed(0))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("scheme", GAIN_SCHEMES)
def test_initialize_is_deterministic_given_a_generator(scheme) -> None:
    def weights(seed: int) -> list[torch.Tensor]:
        model = build("resnext", "mnist", width=0.25)
        initialize(model, scheme, generator=torch.Generator().manual_seed(seed))
        return [m.weight for m in affine_layers(model).values() if m is not classifier(model)]

    same = zip(weights(11), weights(11), strict=True)
    assert all(torch.equal(a, b) for a, b in same)
    differ = zip(weights(11), weights(12), strict=True)
    assert not all(torch.equal(a, b) for a, b in differ)


# Table 5 closed forms, written from the paper's formulas, and the paper's printed values.
CLOSED_FORMS = {
    "xavier_uniform": lambda n: math.sqrt(n) / 4,
    "xavier_normal": lambda n: math.sqrt(n / (2 * math.pi)),
    "kaiming_uniform": lambda n: math.sqrt(6 * n) / 4,
    "kaiming_normal": lambda n: math.sqrt(n / math.pi),
    "ibp": lambda n: 1.0,
}
PAPER_TABLE5 = {
    "xavier_uniform": [1.30, 6.00, 8.48, 45.25],
    "xavier_normal": [2.07, 9.57, 13.54, 72.2],
    "kaiming_uniform": [3.20, 14.70, 20.77, 110.85],
    "kaiming_normal": [2.93, 13.54, 19.15, 102.13],
    "orthogonal": [2.09, 9.58, 13.54, 72.22],
    "ibp": [1.01, 1.00, 1.00, 1.00],
}
FAN_INS = [27, 576, 1152, 32768]


@pytest.mark.parametrize("scheme", sorted(CLOSED_FORMS))
def test_closed_form_gain(scheme) -> None:
    for n in FAN_INS:
        assert closed_form_gain(scheme, n) == pytest.approx(CLOSED_FORMS[scheme](n), rel=1e-12)
    assert closed_form_gain("orthogonal", 27) is None


def sphere_gain(n: int) -> float:
    """n/2 · E|w_1| for a row uniform on the unit sphere in R^n (a row of an orthogonal matrix)."""
    return n / 2 * math.exp(math.lgamma(n / 2) - math.lgamma((n + 1) / 2)) / math.sqrt(math.pi)


@pytest.mark.parametrize("scheme", GAIN_SCHEMES)
def test_empirical_gain_matches_closed_form_and_paper(scheme) -> None:
    for n, paper in zip(FAN_INS, PAPER_TABLE5[scheme], strict=True):
        expected = sphere_gain(n) if scheme == "orthogonal" else CLOSED_FORMS[scheme](n)
        measured = empirical_gain(scheme, n, trials=100, seed=0)
        assert measured == pytest.approx(expected, rel=0.03)
        assert measured == pytest.approx(paper, rel=0.03)


def test_empirical_gain_is_deterministic_per_seed() -> None:
    assert empirical_gain("xavier_normal", 576, trials=5, seed=1) == empirical_gain(
        "xavier_normal", 576, trials=5, seed=1
    )
    assert empirical_gain("xavier_normal", 576, trials=5, seed=1) != empirical_gain(
        "xavier_normal", 576, trials=5, seed=2
    )


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"'lecun'.*default, ibp"):
        initialize(build("cnn7", "mnist", width=0.1), "lecun")
    with pytest.raises(ValueError, match="'default'"):
        closed_form_gain("default", 27)
    with pytest.raises(ValueError, match="'default'"):
        empirical_gain("default", 27)
    with pytest.raises(ValueError, match="n >= 1"):
        empirical_gain("ibp", 0)
    with pytest.raises(ValueError, match="n must be >= 1"):
        closed_form_gain("ibp", 0)
