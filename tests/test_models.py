"""Model shapes, parameter counts, BN variants and the partial-BN switches (the paper's App. C, Models)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fastcert.datasets import DATASETS
from fastcert.method.models import (
    DATASET_SHAPES,
    MODELS,
    PartialBatchNorm1d,
    PartialBatchNorm2d,
    Residual,
    build,
    classifier,
)


# --- analytic parameter counts, written from the authors' layer shapes -----------------
def conv(cin: int, cout: int, k: int, groups: int = 1) -> int:
    return cin // groups * k * k * cout + cout


def bn(c: int) -> int:
    return 2 * c


def linear(fin: int, fout: int) -> int:
    return fin * fout + fout


def cnn7_count(cin: int, size: int, classes: int, fc_bn: bool = True, conv_bn: bool = True) -> int:
    convs = [(cin, 64), (64, 64), (64, 128), (128, 128), (128, 128)]
    total = sum(conv(a, b, 3) + (bn(b) if conv_bn else 0) for a, b in convs)
    return total + linear(size * size * 128, 512) + (bn(512) if fc_bn else 0) + linear(512, classes)


def wrn_count(cin: int, size: int, classes: int, widen: int) -> int:
    total = conv(cin, 16, 3) + bn(16)
    prev = 16
    for planes in (16 * widen, 32 * widen, 64 * widen):
        total += conv(prev, planes, 3) + bn(planes) + conv(planes, planes, 3) + bn(planes)
        total += conv(prev, planes, 1) + bn(planes)  # every stage changes the channel count
        prev = planes
    return total + linear(prev * size * size, 512) + bn(512) + linear(512, classes)


def resnext_count(cin: int, size: int, classes: int, stem: int, width: int, blocks: int) -> int:
    total = conv(cin, stem, 3) + bn(stem)
    prev = stem
    for stage in range(3):
        gw = 2 * width * 2**stage
        for index in range(blocks):
            total += conv(prev, gw, 1) + bn(gw) + conv(gw, gw, 3, groups=2) + bn(gw)
            total += conv(gw, 2 * gw, 1) + bn(2 * gw)
            if index == 0 and (stage > 0 or prev != 2 * gw):
                total += conv(prev, 2 * gw, 1) + bn(2 * gw)
            prev = 2 * gw
    return total + linear(prev * size * size, 512) + bn(512) + linear(512, classes)


ANALYTIC = {
    ("cnn7", "mnist"): cnn7_count(1, 14, 10),
    ("cnn7", "cifar10"): cnn7_count(3, 16, 10),
    ("cnn7", "tinyimagenet"): cnn7_count(3, 16, 200),
    ("wide_resnet", "mnist"): wrn_count(1, 7, 10, widen=8),
    ("wide_resnet", "cifar10"): wrn_count(3, 8, 10, widen=8),
    ("wide_resnet", "tinyimagenet"): wrn_count(3, 16, 200, widen=10),
    ("resnext", "mnist"): resnext_count(1, 7, 10, stem=64, width=32, blocks=1),
    ("resnext", "cifar10"): resnext_count(3, 8, 10, stem=64, width=32, blocks=1),
    ("resnext", "tinyimagenet"): resnext_count(3, 16, 200, stem=16, width=8, blocks=2),
}

# Parameter counts (millions) quoted from the authors' models (authors-code-notes §3.2).
AUTHORS_MILLIONS = {
    ("cnn7", "cifar10"): 17.19,
    ("cnn7", "mnist"): 13.26,
    ("cnn7", "tinyimagenet"): 17.3,
    ("wide_resnet", "cifar10"): 21.5,
    ("wide_resnet", "tinyimagenet"): 91.4,
    ("resnext", "cifar10"): 17.6,
    ("resnext", "tinyimagenet"): 17.0,
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def full_models() -> dict[tuple[str, str], nn.Sequential]:
    torch.manual_seed(0)
    return {key: build(*key) for key in ANALYTIC}


@pytest.mark.parametrize("key", sorted(ANALYTIC))
def test_parameter_count_matches_layer_shapes(full_models, key) -> None:
    assert n_params(full_models[key]) == ANALYTIC[key]


@pytest.mark.parametrize("key", sorted(AUTHORS_MILLIONS))
def test_parameter_count_matches_authors(full_models, key) -> None:
    assert n_params(full_models[key]) / 1e6 == pytest.approx(AUTHORS_MILLIONS[key], rel=0.005)


@pytest.mark.parametrize("key", sorted(ANALYTIC))
def test_output_shape(full_models, key) -> None:
    channels, size, classes = DATASET_SHAPES[key[1]]
    model = full_models[key].eval()
    with torch.no_grad():
        out = model(torch.randn(2, channels, size, size))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_model_takes_its_datasets_images_and_gives_its_classes(dataset: str) -> None:
    """Models are sized from the data catalog: a batch of the catalog's input shape gives one logit
    per class of the catalog, for every family."""
    spec = DATASETS[dataset]
    assert DATASET_SHAPES[dataset] == (spec.input_shape[0], spec.input_shape[1], spec.num_classes)
    for name in MODELS:
        model = build(name, dataset, width=1 / 16).eval()
        with torch.no_grad():
            assert model(torch.zeros(2, *spec.input_shape)).shape == (2, spec.num_classes)


def test_cnn7_tinyimagenet_fifth_conv_has_stride_2(full_models) -> None:
    convs = [m for m in full_models[("cnn7", "tinyimagenet")].modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [1, 1, 2, 1, 2]
    convs = [m for m in full_models[("cnn7", "cifar10")].modules() if isinstance(m, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [1, 1, 2, 1, 1]


def test_every_conv_and_linear_has_bias(full_models) -> None:
    for model in full_models.values():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                assert m.bias is not None


def test_residual_blocks(full_models) -> None:
    wrn = full_models[("wide_resnet", "cifar10")]
    blocks = [m for m in wrn.modules() if isinstance(m, Residual)]
    assert len(blocks) == 3 and all(b.shortcut is not None for b in blocks)
    resnext = full_models[("resnext", "tinyimagenet")]
    blocks = [m for m in resnext.modules() if isinstance(m, Residual)]
    assert [b.shortcut is None for b in blocks] == [False, True, False, True, False, True]
    grouped = [m for m in resnext.modules() if isinstance(m, nn.Conv2d) and m.groups == 2]
    assert len(grouped) == 6


def test_residual_forward() -> None:
    branch, shortcut = nn.Linear(4, 4), nn.Linear(4, 4)
    x = torch.randn(5, 4)
    identity_block = Residual(branch)
    assert isinstance(identity_block.relu, nn.ReLU)
    assert torch.allclose(identity_block(x), torch.relu(branch(x) + x))
    projected = Residual(branch, shortcut)
    assert torch.allclose(projected(x), torch.relu(branch(x) + shortcut(x)))


def _kinds(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules()}


@pytest.mark.parametrize("name", MODELS)
def test_bn_variants(name) -> None:
    full = build(name, "mnist", width=0.25)
    conv_only = build(name, "mnist", bn="conv", width=0.25)
    none = build(name, "mnist", bn="none", width=0.25)
    assert nn.BatchNorm1d in _kinds(full) and nn.BatchNorm2d in _kinds(full)
    assert nn.BatchNorm1d not in _kinds(conv_only) and nn.BatchNorm2d in _kinds(conv_only)
    hidden = classifier(full).in_features
    assert n_params(full) - n_params(conv_only) == 2 * hidden
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in none.modules())
    conv_bn = [m for m in full.modules() if isinstance(m, nn.BatchNorm2d)]
    assert n_params(full) - n_params(none) == 2 * hidden + sum(2 * m.num_features for m in conv_bn)


def test_cnn7_bn_variants_match_authors_counts() -> None:
    assert n_params(build("cnn7", "cifar10", bn="conv")) == cnn7_count(3, 16, 10, fc_bn=False)
    assert n_params(build("cnn7", "cifar10", bn="none")) == cnn7_count(3, 16, 10, fc_bn=False, conv_bn=False)


def test_default_bn_is_plain_batchnorm_and_switches_use_partial() -> None:
    plain = build("cnn7", "mnist", width=0.25)
    assert not any(isinstance(m, (PartialBatchNorm1d, PartialBatchNorm2d)) for m in plain.modules())
    partial = build("resnext", "mnist", width=0.25, bn_centralize=False)
    norms = [m for m in partial.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, (PartialBatchNorm1d, PartialBatchNorm2d)) for m in norms)
    assert all(not m.centralize and m.unitize for m in norms)
    assert isinstance(partial.dense_bn, PartialBatchNorm1d)
    assert isinstance(partial.bn1, nn.BatchNorm2d)  # still a BatchNorm for isinstance checks


def _hand_bn(x, mean, var, weight, bias, eps):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return (x - mean.reshape(shape)) / torch.sqrt(var.reshape(shape) + eps) * weight.reshape(shape) + bias.reshape(
        shape
    )


@pytest.mark.parametrize("dims", [1, 2])
@pytest.mark.parametrize("centralize", [True, False])
@pytest.mark.parametrize("unitize", [True, False])
def test_partial_batchnorm_semantics(dims, centralize, unitize) -> None:
    gen = torch.Generator().manual_seed(1)
    cls = PartialBatchNorm2d if dims == 2 else PartialBatchNorm1d
    norm = cls(3, centralize=centralize, unitize=unitize)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(3, generator=gen) + 0.5)
        norm.bias.copy_(torch.randn(3, generator=gen))
    shape = (6, 3, 4, 4) if dims == 2 else (6, 3)
    x = torch.randn(shape, generator=gen) * 3 + 2
    reduce = [0, 2, 3] if dims == 2 else [0]
    batch_mean, batch_var = x.mean(reduce), x.var(reduce, unbiased=False)
    zeros, ones = torch.zeros(3), torch.ones(3)

    out = norm.train()(x)
    mean = batch_mean if centralize else zeros
    var = batch_var if unitize else ones
    assert torch.allclose(out, _hand_bn(x, mean, var, norm.weight, norm.bias, norm.eps), atol=1e-5)
    # Running statistics are updated from the batch as in plain BN, whatever the switches.
    assert torch.allclose(norm.running_mean, 0.1 * batch_mean, atol=1e-6)
    assert torch.allclose(norm.running_var, 0.9 + 0.1 * x.var(reduce, unbiased=True), atol=1e-6)

    out = norm.eval()(x)
    mean = norm.running_mean if centralize else zeros
    var = norm.running_var if unitize else ones
    assert torch.allclose(out, _hand_bn(x, mean, var, norm.weight, norm.bias, norm.eps), atol=1e-5)


def test_partial_batchnorm_statistics_are_differentiable_in_train_mode() -> None:
    norm = PartialBatchNorm2d(2, centralize=True, unitize=False).train()
    x = torch.randn(4, 2, 3, 3, requires_grad=True)
    norm(x).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_width_scaling() -> None:
    cnn = build("cnn7", "cifar10", width=0.5)
    assert [m.out_channels for m in cnn.modules() if isinstance(m, nn.Conv2d)] == [32, 32, 64, 64, 64]
    assert cnn.dense.out_features == 256 and cnn.dense.in_features == 64 * 16 * 16
    wrn = build("wide_resnet", "cifar10", width=0.25)
    assert [wrn.layer1_0.branch.conv1.out_channels, wrn.layer3_0.branch.conv2.out_channels] == [32, 128]
    assert wrn.conv1.out_channels == 4
    tiny = build("resnext", "cifar10", width=0.01)
    groups = [m.out_channels for m in tiny.modules() if isinstance(m, nn.Conv2d) and m.groups == 2]
    assert all(g >= 2 and g % 2 == 0 for g in groups)
    assert min(m.out_channels for m in tiny.modules() if isinstance(m, nn.Conv2d)) >= 1
    for model, (c, s, k) in [(cnn, (3, 32, 10)), (wrn, (3, 32, 10)), (tiny, (3, 32, 10))]:
        assert model.eval()(torch.randn(2, c, s, s)).shape == (2, k)
    odd = build("resnext", "cifar10", width=0.3)
    groups = [m.out_channels for m in odd.modules() if isinstance(m, nn.Conv2d) and m.groups == 2]
    assert groups == [20, 38, 76]


def _max_abs_over_default_bound(conv_layer: nn.Conv2d) -> float:
    """max|w| / (1/sqrt(fan_in)): at most 1 for PyTorch's default U(±1/sqrt(fan_in))."""
    fan_in = conv_layer.weight[0].numel()
    return conv_layer.weight.abs().max().item() * math.sqrt(fan_in)


def test_constructor_init_follows_the_authors() -> None:
    torch.manual_seed(0)
    wrn = build("wide_resnet", "cifar10", width=0.25)
    conv_layer = wrn.layer2_0.branch.conv1
    fan_out = conv_layer.out_channels * 9
    assert conv_layer.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    assert _max_abs_over_default_bound(conv_layer) > 1.5
    for name, dataset in [("wide_resnet", "tinyimagenet"), ("resnext", "cifar10"), ("cnn7", "cifar10")]:
        model = build(name, dataset, width=0.25)
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert max(_max_abs_over_default_bound(c) for c in convs) <= 1.0


def test_classifier_is_final_linear(full_models) -> None:
    for (_name, dataset), model in full_models.items():
        head = classifier(model)
        assert head is model.fc
        assert head.out_features == DATASET_SHAPES[dataset][2]
    with pytest.raises(ValueError, match=r"no nn.Linear"):
        classifier(nn.Sequential(nn.ReLU()))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "vgg", "dataset": "cifar10"}, "model 'vgg'.*cnn7, wide_resnet, resnext"),
        ({"name": "cnn7", "dataset": "svhn"}, "dataset 'svhn'.*mnist, cifar10, tinyimagenet"),
        ({"name": "cnn7", "dataset": "mnist", "bn": "half"}, "bn 'half'.*full, conv, none"),
        ({"name": "cnn7", "dataset": "mnist", "width": 0.0}, "width"),
        ({"name": "cnn7", "dataset": "mnist", "bn": "none", "bn_unitize": False}, "bn='none'"),
    ],
)
def test_bad_arguments(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        build(**kwargs)
