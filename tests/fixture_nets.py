"""The four auto_LiRPA fixture networks (tests/fixtures/auto_lirpa/README.md §2), rebuilt with
fastcert's :class:`~fastcert.method.models.Residual` so that their state-dict keys match the stored
``param/*`` and ``buffer/*`` arrays."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastcert.method.models import Residual

FIXTURES = Path(__file__).parent / "fixtures" / "auto_lirpa"
NAMES = ("cnn_small", "resnet_small", "resnext_small", "mlp_mnist")
NUM_CLASSES = 10


def _seq(*named: tuple[str, nn.Module]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(named))


def _conv(
    cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, groups: int = 1, bias: bool = False
) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=padding, groups=groups, bias=bias)


def _head(channels: int, hw: int, hidden: int = 32) -> nn.Sequential:
    return _seq(
        ("flatten", nn.Flatten()),
        ("fc0", nn.Linear(channels * hw * hw, hidden)),
        ("bn0", nn.BatchNorm1d(hidden)),
        ("relu0", nn.ReLU()),
        ("fc1", nn.Linear(hidden, NUM_CLASSES)),
    )


def _stem() -> nn.Sequential:
    return _seq(("conv", _conv(3, 8, 3, 1, 1)), ("bn", nn.BatchNorm2d(8)), ("relu", nn.ReLU()))


def cnn_small() -> nn.Sequential:
    return _seq(
        ("conv0", _conv(3, 8, 3, 1, 1, bias=True)),
        ("bn0", nn.BatchNorm2d(8)),
        ("relu0", nn.ReLU()),
        ("conv1", _conv(8, 16, 3, 2, 1, bias=True)),
        ("bn1", nn.BatchNorm2d(16)),
        ("relu1", nn.ReLU()),
        ("flatten", nn.Flatten()),
        ("fc0", nn.Linear(16 * 8 * 8, 32)),
        ("bn2", nn.BatchNorm1d(32)),
        ("relu2", nn.ReLU()),
        ("fc1", nn.Linear(32, NUM_CLASSES)),
    )


def resnet_small() -> nn.Sequential:
    block1 = Residual(
        _seq(
            ("conv0", _conv(8, 16, 3, 2, 1)),
            ("bn0", nn.BatchNorm2d(16)),
            ("relu0", nn.ReLU()),
            ("conv1", _conv(16, 16, 3, 1, 1)),
            ("bn1", nn.BatchNorm2d(16)),
        ),
        _seq(("conv", _conv(8, 16, 1, 2, 0)), ("bn", nn.BatchNorm2d(16))),
    )
    block2 = Residual(
        _seq(
            ("conv0", _conv(16, 16, 3, 1, 1)),
            ("bn0", nn.BatchNorm2d(16)),
            ("relu0", nn.ReLU()),
            ("conv1", _conv(16, 16, 3, 1, 1)),
            ("bn1", nn.BatchNorm2d(16)),
        ),
        None,
    )
    return _seq(("stem", _stem()), ("block1", block1), ("block2", block2), ("head", _head(16, 8)))


def resnext_small() -> nn.Sequential:
    block1 = Residual(
        _seq(
            ("conv0", _conv(8, 8, 1)),
            ("bn0", nn.BatchNorm2d(8)),
            ("relu0", nn.ReLU()),
            ("conv1", _conv(8, 8, 3, 2, 1, groups=2)),
            ("bn1", nn.BatchNorm2d(8)),
            ("relu1", nn.ReLU()),
            ("conv2", _conv(8, 16, 1)),
            ("bn2", nn.BatchNorm2d(16)),
        ),
        _seq(("conv", _conv(8, 16, 1, 2, 0)), ("bn", nn.BatchNorm2d(16))),
    )
    return _seq(("stem", _stem()), ("block1", block1), ("head", _head(16, 8)))


def mlp_mnist() -> nn.Sequential:
    return _seq(
        ("flatten", nn.Flatten()),
        ("fc0", nn.Linear(784, 64)),
        ("bn0", nn.BatchNorm1d(64)),
        ("relu0", nn.ReLU()),
        ("fc1", nn.Linear(64, NUM_CLASSES)),
    )


BUILDERS = {
    "cnn_small": cnn_small,
    "resnet_small": resnet_small,
    "resnext_small": resnext_small,
    "mlp_mnist": mlp_mnist,
}


def load_arrays(name: str) -> dict[str, Any]:
    """Every array of ``<name>.npz`` (small enough to hold in memory)."""
    with np.load(FIXTURES / f"{name}.npz") as data:
        return {key: data[key] for key in data.files}


def load_model(name: str, arrays: dict[str, Any], dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """The fixture network with the stored float32 weights and buffers, upcast to ``dtype``."""
    model = BUILDERS[name]()
    state = {
        key.split("/", 1)[1]: torch.from_numpy(np.array(arrays[key]))
        for key in arrays
        if key.startswith(("param/", "buffer/"))
    }
    model.load_state_dict(state, strict=True)
    return model.to(dtype)


def meta(arrays: dict[str, Any]) -> dict[str, Any]:
    return json.loads(str(arrays["meta_json"]))


def fixture_tensor(
    arrays: dict[str, Any], key: str, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """One stored array as a tensor of ``dtype`` on ``device``."""
    return torch.from_numpy(np.array(arrays[key])).to(device=device, dtype=dtype)


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    """README §1: max |got − ref| relative to the largest magnitude in the reference, plus 1."""
    assert got.shape == ref.shape, f"shape {tuple(got.shape)} != {tuple(ref.shape)}"
    ref = ref.to(got.device).double()
    return ((got.double() - ref).abs().max() / (ref.abs().max() + 1)).item()
