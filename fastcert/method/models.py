"""The paper's three architectures (its App. C "Models"; shapes as in the authors' code) as plain
``torch.nn`` modules.

Every model is an ``nn.Sequential`` of standard layers plus :class:`Residual` blocks, so that the
bound engine (and any external bound library) can walk it layer by layer without tracing. Shapes,
biases and parameter counts follow the authors' model files (``feedforward.py``,
``wide_resnet_bn.py``, ``resnext_bn.py`` and the ``*_imagenet64`` variants); each family also keeps
its constructor's own weight init, because the paper's "vanilla" baseline uses exactly that init.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from fastcert.datasets import DATASETS
from fastcert.method.affine import batchnorm_affine, channel_view
from fastcert.vocabulary import BN_MODES, MODELS

# (channels, image size, number of classes), from the dataset catalog
DATASET_SHAPES: dict[str, tuple[int, int, int]] = {
    name: (spec.input_shape[0], spec.input_shape[1], spec.num_classes) for name, spec in DATASETS.items()
}

HIDDEN_FEATURES = 512
RESNEXT_CARDINALITY = 2


class Residual(nn.Module):
    """Post-activation residual block ``relu(branch(x) + shortcut(x))``.

    The bound engine recognises residual structure by ``isinstance(m, Residual)``; a ``None``
    shortcut is the identity.
    """

    def __init__(self, branch: nn.Module, shortcut: nn.Module | None = None) -> None:
        super().__init__()
        self.branch = branch
        self.shortcut = shortcut
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        return self.relu(self.branch(x) + skip)


class _PartialBatchNorm:
    """BatchNorm with auto_LiRPA's ``bn.mean`` / ``bn.var`` switches (paper Table 8).

    Running statistics are tracked exactly as in standard BN (the standard pass still runs); only
    the normalization replaces the mean by 0 (``centralize=False``) and/or the variance by 1
    (``unitize=False``), in train and eval mode alike. A mixin placed before ``nn.BatchNorm1d/2d``
    so that ``isinstance`` checks for BN still hold.
    """

    training: bool
    eps: float
    weight: nn.Parameter  # affine: the constructor does not offer affine=False
    bias: nn.Parameter
    running_mean: Tensor | None
    running_var: Tensor | None

    def __init__(self, num_features: int, centralize: bool = True, unitize: bool = True) -> None:
        super().__init__(num_features)  # type: ignore[call-arg]
        self.centralize = centralize
        self.unitize = unitize

    def statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of input ``x`` that the normalization uses (the switches apply later)."""
        if self.training or self.running_mean is None or self.running_var is None:
            dims = [0] + list(range(2, x.dim()))
            mean, var = x.mean(dims), x.var(dims, unbiased=False)
        else:
            mean, var = self.running_mean, self.running_var
        return mean, var

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = super().forward(x)  # type: ignore[misc]
        if self.centralize and self.unitize:
            return out
        mean, var = self.statistics(x)
        scale, shift, _ = batchnorm_affine(mean, var, self.weight, self.bias, self.eps, self.centralize, self.unitize)
        return x * channel_view(scale, x) + channel_view(shift, x)


class PartialBatchNorm1d(_PartialBatchNorm, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` with the ``centralize`` / ``unitize`` switches."""


class PartialBatchNorm2d(_PartialBatchNorm, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with the ``centralize`` / ``unitize`` switches."""


class _Spec:
    """Build options shared by all layer factories of one model."""

    def __init__(self, bn: str, width: float, centralize: bool, unitize: bool) -> None:
        self.bn = bn
        self.width = width
        self.centralize = centralize
        self.unitize = unitize

    def channels(self, count: int) -> int:
        return max(1, round(count * self.width))

    def norm(self, features: int, dims: int) -> nn.Module:
        if self.centralize and self.unitize:
            return nn.BatchNorm2d(features) if dims == 2 else nn.BatchNorm1d(features)
        cls = PartialBatchNorm2d if dims == 2 else PartialBatchNorm1d
        return cls(features, centralize=self.centralize, unitize=self.unitize)

    def conv_bn(
        self, suffix: str, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1
    ) -> list[tuple[str, nn.Module]]:
        """``conv{suffix}`` (+ ``bn{suffix}`` unless bn="none"); padding keeps the size at stride 1."""
        conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups)
        layers: list[tuple[str, nn.Module]] = [(f"conv{suffix}", conv)]
        if self.bn != "none":
            layers.append((f"bn{suffix}", self.norm(cout, 2)))
        return layers

    def head(self, flat_features: int, num_classes: int) -> list[tuple[str, nn.Module]]:
        """Flatten, hidden Linear(→512)[-BN1d]-ReLU, classifier Linear(512→K)."""
        hidden = self.channels(HIDDEN_FEATURES)
        layers: list[tuple[str, nn.Module]] = [
            ("flatten", nn.Flatten()),
            ("dense", nn.Linear(flat_features, hidden)),
        ]
        if self.bn == "full":
            layers.append(("dense_bn", self.norm(hidden, 1)))
        layers += [("dense_relu", nn.ReLU()), ("fc", nn.Linear(hidden, num_classes))]
        return layers


def _out_size(size: int, stride: int) -> int:
    """Spatial size after a conv with kernel 2p+1, padding p (or 1x1, padding 0) and ``stride``."""
    return (size - 1) // stride + 1


def _cnn7(spec: _Spec, channels: int, size: int, classes: int, dataset: str) -> nn.Sequential:
    """CNN-7 (authors' ``cnn_7layer_bn2`` / ``cnn_7layer_bn_imagenet``); PyTorch default init."""
    c1, c2 = spec.channels(64), spec.channels(128)
    stride5 = 2 if dataset == "tinyimagenet" else 1
    plan = [(channels, c1, 1), (c1, c1, 1), (c1, c2, 2), (c2, c2, 1), (c2, c2, stride5)]
    layers: list[tuple[str, nn.Module]] = []
    for i, (cin, cout, stride) in enumerate(plan, start=1):
        layers += spec.conv_bn(str(i), cin, cout, 3, stride)
        layers.append((f"relu{i}", nn.ReLU()))
        size = _out_size(size, stride)
    return nn.Sequential(OrderedDict(layers + spec.head(c2 * size * size, classes)))


def _stem(spec: _Spec, channels: int, width: int) -> list[tuple[str, nn.Module]]:
    return spec.conv_bn("1", channels, width, 3) + [("relu1", nn.ReLU())]


def _shortcut(spec: _Spec, cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(spec.conv_bn("", cin, cout, 1, stride)))


def _basic_block(spec: _Spec, cin: int, cout: int, stride: int) -> Residual:
    """WRN post-activation basic block: conv3x3(s)-BN-ReLU-conv3x3-BN (+ conv1x1(s)-BN)."""
    branch = spec.conv_bn("1", cin, cout, 3, stride) + [("relu1", nn.ReLU())]
    branch += spec.conv_bn("2", cout, cout, 3)
    needs_shortcut = stride != 1 or cin != cout
    return Residual(
        nn.Sequential(OrderedDict(branch)),
        _shortcut(spec, cin, cout, stride) if needs_shortcut else None,
    )


def _wide_resnet(spec: _Spec, channels: int, size: int, classes: int, dataset: str) -> nn.Sequential:
    """Wide-ResNet (``wide_resnet_8`` / ``wide_resnet_bn_imagenet64``), one block per stage.

    The CIFAR/MNIST constructor re-initializes every conv with Kaiming-normal (fan_out, relu); the
    TinyImageNet constructor keeps PyTorch's defaults.
    """
    widen = 10 if dataset == "tinyimagenet" else 8
    stem = spec.channels(16)
    layers = _stem(spec, channels, stem)
    cin = stem
    for stage, (base, stride) in enumerate([(16, 1), (32, 2), (64, 2)], start=1):
        cout = spec.channels(base * widen)
        layers.append((f"layer{stage}_0", _basic_block(spec, cin, cout, stride)))
        cin, size = cout, _out_size(size, stride)
    model = nn.Sequential(OrderedDict(layers + spec.head(cin * size * size, classes)))
    if dataset != "tinyimagenet":
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return model


def _bottleneck(spec: _Spec, cin: int, group_width: int, stride: int) -> Residual:
    """ResNeXt block: 1x1-BN-ReLU, grouped 3x3(s)-BN-ReLU, 1x1(→2gw)-BN (+ 1x1(s)-BN shortcut)."""
    cout = 2 * group_width
    branch = spec.conv_bn("1", cin, group_width, 1) + [("relu1", nn.ReLU())]
    branch += spec.conv_bn("2", group_width, group_width, 3, stride, groups=RESNEXT_CARDINALITY)
    branch += [("relu2", nn.ReLU())] + spec.conv_bn("3", group_width, cout, 1)
    needs_shortcut = stride != 1 or cin != cout
    return Residual(
        nn.Sequential(OrderedDict(branch)),
        _shortcut(spec, cin, cout, stride) if needs_shortcut else None,
    )


def _group_width(spec: _Spec, count: int) -> int:
    """Scaled group width, kept a positive multiple of the cardinality."""
    groups = max(1, round(count * spec.width / RESNEXT_CARDINALITY))
    return groups * RESNEXT_CARDINALITY


def _resnext(spec: _Spec, channels: int, size: int, classes: int, dataset: str) -> nn.Sequential:
    """ResNeXt (``ResNeXt_2_32`` / ``ResNeXt_bn_imagenet64``), cardinality 2; default init."""
    if dataset == "tinyimagenet":
        stem_width, bottleneck_width, blocks = 16, 8, 2
    else:
        stem_width, bottleneck_width, blocks = 64, 32, 1
    stem = spec.channels(stem_width)
    layers = _stem(spec, channels, stem)
    cin = stem
    for stage, stride in enumerate([1, 2, 2], start=1):
        group_width = _group_width(spec, RESNEXT_CARDINALITY * bottleneck_width * 2 ** (stage - 1))
        for index in range(blocks):
            block_stride = stride if index == 0 else 1
            layers.append((f"layer{stage}_{index}", _bottleneck(spec, cin, group_width, block_stride)))
            cin, size = 2 * group_width, _out_size(size, block_stride)
    return nn.Sequential(OrderedDict(layers + spec.head(cin * size * size, classes)))


_BUILDERS = {"cnn7": _cnn7, "wide_resnet": _wide_resnet, "resnext": _resnext}


def _check_choice(kind: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {kind} {value!r}; valid: {', '.join(valid)}")


def build(
    name: str,
    dataset: str,
    bn: str = "full",
    width: float = 1.0,
    bn_centralize: bool = True,
    bn_unitize: bool = True,
) -> nn.Sequential:
    """Build model ``name`` for ``dataset`` with the authors' shapes and constructor init.

    ``bn``: "full" (BN after every conv and the hidden FC), "conv" (none after the hidden FC) or
    "none". ``width`` scales every hidden channel/feature count (scaled-down runs).
    ``bn_centralize``/``bn_unitize`` = False switch to :class:`PartialBatchNorm2d`/``1d``.
    """
    _check_choice("model", name, MODELS)
    _check_choice("dataset", dataset, tuple(DATASET_SHAPES))
    _check_choice("bn", bn, BN_MODES)
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    if bn == "none" and not (bn_centralize and bn_unitize):
        raise ValueError("bn_centralize/bn_unitize switches need BatchNorm layers, but bn='none'")
    spec = _Spec(bn, width, bn_centralize, bn_unitize)
    channels, size, classes = DATASET_SHAPES[dataset]
    return _BUILDERS[name](spec, channels, size, classes, dataset)


def classifier(model: nn.Module) -> nn.Linear:
    """The final Linear layer (the one IBP init leaves at PyTorch's default)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"model {type(model).__name__} has no nn.Linear layer")
    return linears[-1]


__all__ = [
    "BN_MODES",
    "DATASET_SHAPES",
    "MODELS",
    "PartialBatchNorm1d",
    "PartialBatchNorm2d",
    "Residual",
    "build",
    "classifier",
]
