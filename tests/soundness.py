"""The soundness harness shared by tests/test_bounds_soundness.py, tests/test_crown_soundness.py and
tests/test_cuda.py: sampled points, random box vertices and a PGD attack on every output, pushed
through a *frozen* copy of the model, must stay within the bounds (see test_bounds_soundness.py).
Works on any device: the random draws come from a CPU generator and move to the box's device.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor, nn

from fastcert.method.bounds import BoundPass, bound_pass
from fastcert.method.bounds.plan import plan_for
from fastcert.method.models import (
    PartialBatchNorm1d,
    PartialBatchNorm2d,
    Residual,
)

DTYPE = torch.float64


@pytest.fixture(autouse=True, scope="module")
def single_thread() -> Iterator[None]:
    """These tensors are tiny: one thread is faster, and far faster on a shared, loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


UNIFORM, VERTICES, PGD_STEPS = 24, 24, 8


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class TraversalAffine(nn.Module):
    """``scale·z + shift`` per channel: what one BatchNorm applied in one traversal."""

    def __init__(self, scale: Tensor, shift: Tensor) -> None:
        super().__init__()
        self.scale, self.shift = scale.detach(), shift.detach()

    def forward(self, z: Tensor) -> Tensor:
        view = (1, -1) + (1,) * (z.dim() - 2)
        return z * self.scale.view(view) + self.shift.view(view)


def frozen_copy(model: nn.Module, result: BoundPass) -> nn.Module:
    """An eval-mode copy whose BatchNorms are the affine maps ``result``'s traversal applied."""
    assert result.context is not None
    names = {id(module): name for name, module in model.named_modules()}
    frozen = copy.deepcopy(model).eval()
    for op in plan_for(model).ops:
        if op.index in result.context.bn_affine:
            scale, shift = result.context.bn_affine[op.index]
            parent, _, child = names[id(op.module)].rpartition(".")
            setattr(frozen.get_submodule(parent), child, TraversalAffine(scale, shift))
    assert not _bn_layers(frozen)
    return frozen


class Recorder:
    """Collects every ReLU input of a model, in forward order, for each call."""

    def __init__(self, model: nn.Module) -> None:
        self.inputs: list[Tensor] = []
        for module in model.modules():
            if isinstance(module, nn.ReLU):
                module.register_forward_pre_hook(lambda m, args: self.inputs.append(args[0].detach()))


def box_points(x_lower: Tensor, x_upper: Tensor, generator: torch.Generator, effort: float) -> Tensor:
    """[S, B, ...]: uniform points and random vertices of the box."""
    uniform, vertices = round(UNIFORM * effort), round(VERTICES * effort)
    shape = (uniform + vertices,) + tuple(x_lower.shape)
    fraction = torch.rand(shape, generator=generator, dtype=x_lower.dtype).to(x_lower.device)
    fraction[uniform:] = fraction[uniform:].round()
    return x_lower + fraction * (x_upper - x_lower)


def check_sound(
    model: nn.Module,
    x: Tensor,
    x_lower: Tensor,
    x_upper: Tensor,
    C: Tensor | None = None,
    exact: bool = False,
    effort: float = 1.0,
    method: str = "ibp",
    intersect_ibp: bool = False,
) -> BoundPass:
    """Run a bound pass of ``method`` and check it against sampled and attacked points.

    ``effort`` scales the number of samples and attack steps. CROWN-IBP and CROWN run without
    autograd (full CROWN would otherwise keep the graph of every neuron chunk)."""
    refined = functools.partial(bound_pass, method=method, intersect_ibp=intersect_ibp)
    bound = bound_pass if method == "ibp" else torch.no_grad()(refined)
    result = bound(model, x, x_lower, x_upper, C=C)
    frozen = frozen_copy(model, result)
    recorder = Recorder(frozen)
    batch = x.shape[0]

    def outputs(points: Tensor) -> Tensor:
        """[S, B, M] outputs (logits or margins) for points [S, B, ...]."""
        logits = frozen(points.reshape((-1,) + tuple(x.shape[1:]))).reshape(points.shape[0], batch, -1)
        return logits if C is None else torch.einsum("bmk,sbk->sbm", C, logits)

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        values = [outputs(box_points(x_lower, x_upper, generator, effort))]
    values += pgd(outputs, x_lower, x_upper, result.lower.shape[1], generator, max(1, round(PGD_STEPS * effort)))
    reached = torch.cat(values)  # [S', B, M]
    _assert_within(reached, result.lower, result.upper, "output")
    if exact:
        scale = 1e-6 * (1 + result.upper.abs().max())
        assert (reached.max(0).values >= result.upper - scale).all(), "upper bound not attained"
        assert (reached.min(0).values <= result.lower + scale).all(), "lower bound not attained"
    _check_pre_activations(recorder.inputs, result, batch)
    return result


def pgd(
    outputs: Callable[[Tensor], Tensor],
    x_lower: Tensor,
    x_upper: Tensor,
    width: int,
    generator: torch.Generator,
    steps: int,
) -> list[Tensor]:
    """Signed-gradient ascent, one attacker per (output index, direction); returns every iterate's outputs."""
    device = x_lower.device
    targets = torch.arange(2 * width, device=device) % width
    signs = torch.where(torch.arange(2 * width, device=device) < width, 1.0, -1.0).to(x_lower.dtype)
    step = (x_upper - x_lower) / 4
    shape = (2 * width,) + tuple(x_lower.shape)
    fraction = torch.rand(shape, generator=generator, dtype=x_lower.dtype).to(device)
    points = x_lower + fraction * (x_upper - x_lower)
    reached = []
    for _ in range(steps):
        points.requires_grad_(True)
        out = outputs(points)  # [2M, B, M]
        reached.append(out.detach())
        chosen = out[torch.arange(2 * width, device=device), :, targets]  # [2M, B]
        (grad,) = torch.autograd.grad((signs[:, None] * chosen).sum(), points)
        with torch.no_grad():
            points = torch.minimum(torch.maximum(points + step * grad.sign(), x_lower), x_upper)
    with torch.no_grad():
        reached.append(outputs(points))
    return reached


def _assert_within(values: Tensor, lower: Tensor, upper: Tensor, what: str) -> None:
    relative = 1e-9 if lower.dtype == torch.float64 else 1e-5
    tol = relative * (1 + torch.maximum(lower.abs().max(), upper.abs().max()))
    below = (lower - values).max().item()
    above = (values - upper).max().item()
    assert below <= tol and above <= tol, f"{what} leaves its bounds by {max(below, above):.3e}"


def _check_pre_activations(recorded: list[Tensor], result: BoundPass, batch: int) -> None:
    relus = len(result.pre_activation)
    assert relus > 0 or not recorded
    assert len(recorded) % relus == 0 if relus else True
    for call in range(len(recorded) // max(relus, 1)):
        for k, (lower, upper) in enumerate(result.pre_activation):
            value = recorded[call * relus + k].reshape((-1, batch) + tuple(lower.shape[1:]))
            _assert_within(value, lower, upper, f"pre-activation {k}")


def random_box(
    shape: tuple[int, ...], radius: float, seed: int, dtype: torch.dtype = DTYPE
) -> tuple[Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=dtype)
    width = radius * torch.rand(shape, generator=generator, dtype=dtype)
    shift = (torch.rand(shape, generator=generator, dtype=dtype) - 0.5) * width  # box not centered on x
    return x, x + shift - width, x + shift + width


def randomize_bn(model: nn.Module, seed: int) -> nn.Module:
    """Non-trivial BN parameters and running stats (negative γ included)."""
    generator = torch.Generator().manual_seed(seed)
    for bn in _bn_layers(model):
        n = bn.num_features
        with torch.no_grad():
            if bn.weight is not None:
                sign = torch.where(torch.rand(n, generator=generator) < 0.3, -1.0, 1.0)
                bn.weight.copy_(sign * (0.5 + torch.rand(n, generator=generator)))
                bn.bias.copy_(torch.rand(n, generator=generator) - 0.5)
            assert bn.running_mean is not None and bn.running_var is not None
            bn.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
            bn.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return model


# --- single layers ----------------------------------------------------------------------------
LAYERS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], bool]] = {
    "linear": (lambda: nn.Linear(6, 5), (3, 6), True),
    "linear_no_bias": (lambda: nn.Linear(6, 5, bias=False), (3, 6), True),
    "conv_stride_pad": (lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1), (3, 2, 6, 6), True),
    "conv_dilation_pad2": (lambda: nn.Conv2d(2, 3, 3, padding=2, dilation=2, bias=False), (3, 2, 5, 5), True),
    "conv_groups": (lambda: nn.Conv2d(4, 6, (3, 2), stride=(1, 2), groups=2), (3, 4, 5, 6), True),
    # 1x1 strided convolutions run on the subsampled grid on CPU (fastcert.method.bounds.ops.ConvOp)
    "conv1x1_stride2": (lambda: nn.Conv2d(3, 2, 1, stride=2), (3, 3, 7, 7), True),
    "conv1x1_stride_pad": (
        lambda: nn.Conv2d(2, 4, 1, stride=(2, 3), padding=1, groups=2, bias=False),
        (3, 2, 6, 7),
        True,
    ),
    "bn1d": (lambda: nn.BatchNorm1d(5), (4, 5), True),
    "bn2d": (lambda: nn.BatchNorm2d(3), (4, 3, 3, 3), True),
    "bn2d_no_affine": (lambda: nn.BatchNorm2d(3, affine=False), (4, 3, 3, 3), True),
    "bn1d_no_centralize": (lambda: PartialBatchNorm1d(5, centralize=False), (4, 5), True),
    "bn2d_no_unitize": (lambda: PartialBatchNorm2d(3, unitize=False), (4, 3, 3, 3), True),
    "bn2d_neither": (lambda: PartialBatchNorm2d(3, centralize=False, unitize=False), (4, 3, 3, 3), True),
    "relu": (lambda: nn.ReLU(), (3, 7), True),
    "flatten": (lambda: nn.Flatten(), (3, 2, 2, 2), True),
    "residual_identity": (lambda: Residual(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))), (4, 4), False),
    "residual_projection": (
        lambda: Residual(
            nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Conv2d(3, 3, 3, padding=1)),
            nn.Sequential(nn.Conv2d(2, 3, 1, stride=1), nn.BatchNorm2d(3)),
        ),
        (4, 2, 4, 4),
        False,
    ),
}


# --- model families ---------------------------------------------------------------------------
FAMILIES = [(name, dataset) for dataset in ("cifar10", "mnist") for name in ("cnn7", "wide_resnet", "resnext")]
