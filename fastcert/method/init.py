"""Weight initializations and the IBP difference gain (paper §3.2.1, §3.3.1, Appendix A).

IBP bounds widen layer by layer by the *difference gain* ``E(Δi)/E(Δi−1) = n_i/2 · E|W_i|``
(Definition 1): interval widths pass through ``|W|`` (``n_i`` terms) and a ReLU halves their
expected width when the pre-activation centres are symmetric about 0 (Appendix D.1). Standard
initializations give gains growing like √n, so bounds explode at init; IBP init draws
``W ~ N(0, σ²)`` with ``σ = √(2π)/n`` so that the gain is exactly 1. After a residual addition the
two summed widths double the gain, so layers reading ``ReLU(Add(...))`` are halved (Appendix A.3),
as in the authors' ``manual_init.ibp_init``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from fastcert.method.models import Residual, classifier
from fastcert.vocabulary import INIT_SCHEMES

# Table 5 rows as distributions over fan-in n: (family, scale(n)); "normal" scale is the std,
# "uniform" scale is the half-width a of U(-a, a). The paper's "Xavier (uniform)" is PyTorch's
# default Conv/Linear init. Orthogonal has no closed form and is handled separately.
_DISTRIBUTIONS = {
    "ibp": ("normal", lambda n: math.sqrt(2 * math.pi) / n),
    "xavier_uniform": ("uniform", lambda n: 1 / math.sqrt(n)),
    "xavier_normal": ("normal", lambda n: 1 / math.sqrt(n)),
    "kaiming_uniform": ("uniform", lambda n: math.sqrt(6 / n)),
    "kaiming_normal": ("normal", lambda n: math.sqrt(2 / n)),
}
GAIN_SCHEMES = tuple(s for s in INIT_SCHEMES if s != "default")

# Empirical-gain measurement: at most 16 output units (never more than the fan-in, so that an
# orthogonal matrix is row-orthonormal as in the paper's layers) and about this many weights and
# input widths per trial: enough for a sub-percent mean over 100 trials, and fast at n = 32768.
_GAIN_MAX_OUTPUTS = 16
_GAIN_SAMPLES = 4096


def _check_scheme(scheme: str, valid: tuple[str, ...]) -> None:
    if scheme not in valid:
        raise ValueError(f"unknown init scheme {scheme!r}; valid: {', '.join(valid)}")


def _fill(weight: Tensor, scheme: str, generator: torch.Generator | None) -> None:
    """Redraw ``weight`` in place from ``scheme``'s distribution over its fan-in."""
    if scheme == "orthogonal":
        nn.init.orthogonal_(weight, generator=generator)
        return
    family, scale = _DISTRIBUTIONS[scheme]
    spread = scale(weight[0].numel())  # fan-in: in_channels/groups·kH·kW, or in_features
    if family == "normal":
        nn.init.normal_(weight, 0.0, spread, generator=generator)
    else:
        nn.init.uniform_(weight, -spread, spread, generator=generator)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _collect_residual_inputs(module: nn.Module, prefix: str, fed_by_residual: bool, found: list[str]) -> bool:
    """Append names of Conv/Linear layers reading a Residual's output; return whether ``module``'s
    own output is a Residual output (i.e. ``ReLU(Add(...))``)."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        if fed_by_residual:
            found.append(prefix)
        return False
    if isinstance(module, Residual):
        _collect_residual_inputs(module.branch, _join(prefix, "branch"), fed_by_residual, found)
        if module.shortcut is not None:
            _collect_residual_inputs(module.shortcut, _join(prefix, "shortcut"), fed_by_residual, found)
        return True
    if isinstance(module, nn.Sequential):
        state = fed_by_residual
        for name, child in module.named_children():
            state = _collect_residual_inputs(child, _join(prefix, name), state, found)
        return state
    # Any other layer (BN, ReLU, Flatten, ...) sits between the addition and the next affine
    # layer; e.g. the dense layer after Flatten(ReLU(Add)) is not halved, as in the authors' code.
    return False


def residual_input_layers(model: nn.Module) -> list[str]:
    """Qualified names of the Conv/Linear layers whose input is ``ReLU(Add(...))``.

    These are the next block's first conv and its shortcut conv; IBP init halves them.
    """
    found: list[str] = []
    _collect_residual_inputs(model, "", False, found)
    return found


def initialize(model: nn.Module, scheme: str, generator: torch.Generator | None = None) -> None:
    """Re-initialize ``model``'s Conv/Linear weights in place with ``scheme``.

    "default" keeps the constructor's init (the paper's vanilla baseline). Every other scheme
    redraws every Conv/Linear weight except the final classifier (which keeps PyTorch's default);
    biases and BN parameters are untouched. "ibp" additionally halves the layers listed by
    :func:`residual_input_layers`.
    """
    _check_scheme(scheme, INIT_SCHEMES)
    if scheme == "default":
        return
    head = classifier(model)
    halved = set(residual_input_layers(model)) if scheme == "ibp" else set()
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module is not head:
                _fill(module.weight, scheme, generator)
                if name in halved:
                    module.weight.mul_(0.5)


def closed_form_gain(scheme: str, n: int) -> float | None:
    """Difference gain ``n/2 · E|W|`` of ``scheme`` at fan-in ``n`` (paper Table 5).

    xavier_uniform √n/4, xavier_normal √(n/2π), kaiming_uniform √(6n)/4, kaiming_normal √(n/π),
    ibp 1; orthogonal has no closed form (None).
    """
    _check_scheme(scheme, GAIN_SCHEMES)
    if n < 1:
        raise ValueError(f"fan-in n must be >= 1, got {n}")
    if scheme == "orthogonal":
        return None
    family, scale = _DISTRIBUTIONS[scheme]
    mean_abs = scale(n) * math.sqrt(2 / math.pi) if family == "normal" else scale(n) / 2
    return n / 2 * mean_abs


def empirical_gain(scheme: str, n: int, trials: int = 100, seed: int = 0) -> float:
    """Mean over ``trials`` of ``Ê(Δi)/Ê(Δi−1)`` for a freshly drawn layer of fan-in ``n``.

    Setting (the paper's derivation, §3.2.1 and Appendix D.1): the previous layer's pre-activation
    bounds are ``[c − r, c + r]`` with centres ``c ~ N(0, 1)`` (symmetric about 0, as a symmetric
    random previous layer gives) and radii ``r ~ U(0, 1)``, so ``Δi−1 = 2r``. They go through a
    ReLU and then through a new ``m × n`` weight drawn from ``scheme`` (m ≤ min(n, 16)):
    ``Δi = |W| (ReLU(c + r) − ReLU(c − r))``. Each trial draws a new weight and new bounds.
    """
    _check_scheme(scheme, GAIN_SCHEMES)
    if n < 1 or trials < 1:
        raise ValueError(f"need n >= 1 and trials >= 1, got n={n}, trials={trials}")
    generator = torch.Generator().manual_seed(seed)
    batch = math.ceil(_GAIN_SAMPLES / n)
    weight = torch.empty(min(n, _GAIN_MAX_OUTPUTS, batch), n)
    total = 0.0
    for _ in range(trials):
        _fill(weight, scheme, generator)
        center = torch.randn(batch, n, generator=generator)
        radius = torch.rand(batch, n, generator=generator)
        post_relu = torch.relu(center + radius) - torch.relu(center - radius)
        width = post_relu @ weight.abs().T
        total += (width.mean() / (2 * radius).mean()).item()
    return total / trials


__all__ = [
    "GAIN_SCHEMES",
    "closed_form_gain",
    "empirical_gain",
    "initialize",
    "residual_input_layers",
]
