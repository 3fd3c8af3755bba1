"""CROWN's intermediate bounds on local coefficients (:mod:`fastcert.method.bounds.window`) are the
dense backward pass's bounds, neuron by neuron, on every model family and image size of the paper
(strided, grouped, 1×1 and residual convolutions; BatchNorm in train and eval mode), whatever the
chunk size; soundness of the result is checked in test_crown_soundness / test_crown_intersect."""

from __future__ import annotations

import math

import pytest
import torch
from soundness import DTYPE, random_box, randomize_bn, single_thread  # noqa: F401  (autouse fixture)
from torch import Tensor

from fastcert.method.bounds import BackwardPass, bound_pass
from fastcert.method.bounds.crown import CHUNK_ELEMENTS, _windowed_values
from fastcert.method.bounds.ops import ReluOp
from fastcert.method.bounds.window import Window
from fastcert.method.models import DATASET_SHAPES, build

CASES = [
    ("cnn7", "mnist"),
    ("cnn7", "tinyimagenet"),  # stride 2 in the fifth convolution
    ("wide_resnet", "cifar10"),  # residual sums, 1×1 strided shortcuts
    ("resnext", "cifar10"),  # grouped convolutions, 1×1 convolutions
]
NEURONS_PER_LAYER = 12


def _backward_pass(name: str, dataset: str, mode: str) -> BackwardPass:
    torch.manual_seed(0)
    model = randomize_bn(build(name, dataset, width=0.0625).to(DTYPE), seed=1).train(mode == "train")
    channels, size, _ = DATASET_SHAPES[dataset]
    x, x_lower, x_upper = random_box((2, channels, size, size), 0.05, seed=2)
    ibp = bound_pass(model, x, x_lower, x_upper)
    assert ibp.context is not None
    return BackwardPass(model, ibp.context, x_lower, x_upper)


def _pairs(batch: int, rows: Tensor) -> Tensor:
    """Every (example, neuron) pair of ``rows``, example-major like the dense result [B, len(rows)]."""
    examples = torch.arange(batch).repeat_interleave(len(rows))
    return torch.stack([examples, rows.repeat(batch)], dim=1)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize(("name", "dataset"), CASES)
def test_windows_give_the_dense_bounds(name: str, dataset: str, mode: str) -> None:
    backward = _backward_pass(name, dataset, mode)
    windowed = _windowed_values(backward.plan, backward.context.shapes)
    relu_inputs = [op.src[0] for op in backward.plan.ops if isinstance(op, ReluOp)]
    feature_maps = [value for value in relu_inputs if len(backward.context.shapes[value]) == 3]
    assert feature_maps and set(feature_maps) <= windowed  # every convolutional layer takes the window path
    generator = torch.Generator().manual_seed(3)
    for value in feature_maps:
        neurons = torch.randperm(math.prod(backward.context.shapes[value]), generator=generator)[:NEURONS_PER_LAYER]
        dense_lower, dense_upper = backward._neuron_bounds(value, neurons, CHUNK_ELEMENTS)
        lower, upper = backward._window_bounds(value, _pairs(2, neurons), CHUNK_ELEMENTS)
        torch.testing.assert_close(lower.view(2, -1), dense_lower, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(upper.view(2, -1), dense_upper, rtol=1e-10, atol=1e-10)


def test_window_bounds_do_not_depend_on_the_chunk_size() -> None:
    backward = _backward_pass("resnext", "cifar10", "eval")
    shapes = backward.context.shapes
    value = [op.src[0] for op in backward.plan.ops if isinstance(op, ReluOp) and len(shapes[op.src[0]]) == 3][-1]
    pairs = _pairs(2, torch.arange(0, math.prod(shapes[value]), 97))
    one_by_one = backward._window_bounds(value, pairs, 1)
    together = backward._window_bounds(value, pairs, CHUNK_ELEMENTS)
    for a, b in zip(one_by_one, together):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_residual_windows_align_by_their_geometry() -> None:
    """A 3×3 window starting one row and column before a 1×1 window of the same neuron: their sum
    is the 3×3 window with the 1×1 one added at its center."""
    wide = Window(torch.ones(2, 1, 3, 3, dtype=DTYPE), (2, 2), (-1, -1), True)
    narrow = Window(torch.full((2, 1, 1, 1), 5.0, dtype=DTYPE), (2, 2), (0, 0), True)
    total = wide.plus(narrow)
    assert total.shift == (-1, -1) and total.A.shape == (2, 1, 3, 3)
    expected = torch.ones(2, 1, 3, 3, dtype=DTYPE)
    expected[:, :, 1, 1] = 6.0
    torch.testing.assert_close(total.A, expected)
    assert narrow.plus(wide).A.equal(total.A)
    with pytest.raises(ValueError, match="do not align"):
        wide.plus(Window(narrow.A, (1, 1), (0, 0), True))
