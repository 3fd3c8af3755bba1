"""Warmup regularizers: hand-computed values, the authors' edge cases, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fastcert.method import regularizers
from fastcert.method.regularizers import (
    ReluState,
    input_tightness,
    layer_tightness,
    log_tightness_ratio,
    relu_counts,
    relu_loss,
    relu_state,
    tightness_loss,
    warmup_regularizer,
    warmup_regularizer_with_counts,
)
from fastcert.vocabulary import REGULARIZER_TERMS

Layer = tuple[torch.Tensor, torch.Tensor]
TAU = 0.5  # the paper's τ
OURS_TERMS = ("tightness", "relu")


def std_loss(pre_activation: list[Layer], tau: float = TAU) -> torch.Tensor:
    """``L_std`` alone: the ``std`` part of the fused pass (its input box plays no part in it)."""
    box = torch.zeros(1, 1, dtype=pre_activation[0][0].dtype)
    return warmup_regularizer(box, box, pre_activation, terms=("std",), tau=tau)[0]


def layer(lower: list[float], upper: list[float]) -> Layer:
    return torch.tensor(lower, dtype=torch.float64), torch.tensor(upper, dtype=torch.float64)


def from_centers(centers: list[float], active: list[bool], inactive: list[bool]) -> Layer:
    """Bounds with the given centers: half-width 0.5 if active/inactive, |c|+1 if unstable."""
    c = torch.tensor(centers, dtype=torch.float64)
    stable = torch.tensor(active) | torch.tensor(inactive)
    radius = torch.where(stable, torch.full_like(c, 0.5), c.abs() + 1)
    return c - radius, c + radius


def reference_relu_loss(pre_activation: list[Layer], tau: float = TAU) -> float:
    """The paper's L_relu written with plain IEEE arithmetic, as the authors compute it."""
    total = torch.zeros((), dtype=torch.float64)
    for lower, upper in pre_activation:
        c = (upper + lower) / 2
        act, inact = (lower > 0).to(c.dtype), (upper < 0).to(c.dtype)
        dev = (c - c.mean()) ** 2
        alpha = (c * act).mean() / -(c * inact).mean()
        beta = (dev * act).sum() / (dev * inact).sum()
        alpha = torch.min(alpha, 1 / alpha.clamp(min=1e-12))
        beta = torch.min(beta, 1 / beta.clamp(min=1e-12))
        term = (F.relu(tau - alpha) + F.relu(tau - beta)) / tau
        if torch.isfinite(term):
            total = total + term
    return (total / len(pre_activation)).item()


# Hand-computed layers (τ = 0.5). Centers c, active (l>0), inactive (u<0):
# A: c=[2,-3,-4,1]: α=2/7, m=-1, β=9/13 → term (1/2-2/7)/(1/2) = 3/7.
LAYER_A = layer([1, -4, -6, -2], [3, -2, -2, 4])
# B: c=[4,-1,-3], active {4}, inactive {-1}: α=4 → 1/4, m=0, β=16/1 → 1/16;
#    term = (1/4 + 7/16)/(1/2) = 11/8.
LAYER_B = layer([3, -1.5, -7], [5, -0.5, 1])
# C: c=[3,7,-2,2]: α=10/2=5 → 1/5; m=2.5, β=20.5/20.25 → 0.98; term = (1/2-1/5)/(1/2) = 3/5.
LAYER_C = layer([2, 6, -3, -2], [4, 8, -1, 6])
# Edge cases.
NO_INACTIVE = layer([1, -1], [3, 1])  # α = 2/(-0) = -inf: skipped
ALL_UNSTABLE = layer([-1, -2], [1, 3])  # 0/0: skipped
NO_ACTIVE = layer([-3, -1, -2], [-1, 2, -1])  # α = β = 0: term 2
NO_ACTIVE_FLAT = layer([-3, -3], [-1, -1])  # α = 0 but β = 0/0: skipped
# c=[1,-1,-3], m=-1: the inactive center sits on the mean, β = 4/0 = inf → flipped to 0, α = 1.
FLAT_INACTIVE = layer([0.5, -1.5, -7], [1.5, -0.5, 1])


@pytest.mark.parametrize(
    "name, bounds, expected",
    [
        ("A", LAYER_A, 3 / 7),
        ("B", LAYER_B, 11 / 8),
        ("alpha>1 flipped", LAYER_C, 3 / 5),
        ("no inactive", NO_INACTIVE, 0.0),
        ("all unstable", ALL_UNSTABLE, 0.0),
        ("no active", NO_ACTIVE, 2.0),
        ("no active, flat", NO_ACTIVE_FLAT, 0.0),
        ("flat inactive", FLAT_INACTIVE, 1.0),
    ],
)
def test_relu_loss_single_layer_by_hand(name: str, bounds: Layer, expected: float) -> None:
    value = relu_loss([bounds], TAU).item()
    assert value == pytest.approx(expected, rel=1e-12, abs=1e-15), name
    assert value == pytest.approx(reference_relu_loss([bounds]), rel=1e-12, abs=1e-15), name


def test_relu_loss_averages_over_all_layers_including_skipped_ones() -> None:
    layers = [LAYER_A, NO_INACTIVE, LAYER_B, ALL_UNSTABLE, NO_ACTIVE]
    expected = (3 / 7 + 11 / 8 + 2) / 5
    assert relu_loss(layers, TAU).item() == pytest.approx(expected, rel=1e-12)
    assert relu_loss(layers, TAU).item() == pytest.approx(reference_relu_loss(layers), rel=1e-12)


def test_relu_loss_tau() -> None:
    # Layer A with τ = 1: α = 2/7, β = 9/13 → (5/7 + 4/13) / 1.
    assert relu_loss([LAYER_A], tau=1.0).item() == pytest.approx(5 / 7 + 4 / 13, rel=1e-12)


def test_relu_loss_skips_non_finite_bounds() -> None:
    broken = layer([float("nan"), -2, 1], [1, -1, 2])
    assert relu_loss([LAYER_A, broken], TAU).item() == pytest.approx(3 / 14, rel=1e-12)


def test_relu_loss_matches_reference_on_random_layers() -> None:
    generator = torch.Generator().manual_seed(0)
    layers = []
    for shift in (-3.0, -1.0, 0.0, 0.5, 1.0, 3.0):
        center = torch.randn(4, 6, generator=generator, dtype=torch.float64) + shift
        radius = torch.rand(4, 6, generator=generator, dtype=torch.float64) * 1.5
        layers.append((center - radius, center + radius))
    assert relu_loss(layers, TAU).item() == pytest.approx(reference_relu_loss(layers), rel=1e-12)
    for bounds in layers:
        assert relu_loss([bounds], TAU).item() == pytest.approx(reference_relu_loss([bounds]), rel=1e-12)


def test_relu_loss_gradient_matches_finite_differences() -> None:
    lower, upper = from_centers(
        [2.0, 1.3, -3.0, -4.5, 0.4, -0.7],
        active=[True, True, False, False, False, False],
        inactive=[False, False, True, True, False, False],
    )
    lower.requires_grad_(True)
    upper.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda lo, up: relu_loss([(lo, up)], TAU), (lower, upper))
    relu_loss([(lower, upper)], TAU).backward()
    assert lower.grad.abs().sum() > 0 and upper.grad.abs().sum() > 0


@pytest.mark.parametrize("bounds", [NO_INACTIVE, ALL_UNSTABLE, NO_ACTIVE, NO_ACTIVE_FLAT, FLAT_INACTIVE])
def test_relu_loss_edge_case_gradients_are_finite_and_zero(bounds: Layer) -> None:
    # Skipped layers and the constant outcomes (α or β forced to 0) carry no gradient, and
    # the 1e-12 clamp keeps 1/α finite when α = 0.
    lower, upper = (t.clone().requires_grad_(True) for t in bounds)
    relu_loss([(lower, upper), LAYER_A], TAU).backward()
    assert torch.equal(lower.grad, torch.zeros_like(lower))
    assert torch.equal(upper.grad, torch.zeros_like(upper))


X_LOWER = torch.tensor([[-1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
X_UPPER = torch.tensor([[1.0, 1.0], [2.0, 0.0]], dtype=torch.float64)  # Ê(Δ0) = 2.5/4 = 0.625
WIDTH_1 = layer([0, 0, 0], [1, 2, 3])  # Ê = 1: ratio 0.625 → ReLU(−0.125) = 0
WIDTH_5 = layer([0, 0], [5, 15])  # Ê = 5: ratio 0.125 → 0.375/0.5 = 0.75
WIDTH_0 = layer([1, 2], [1, 2])  # Ê = 0 → clamped to 1e-12: ratio huge → 0


def test_input_and_layer_tightness() -> None:
    assert input_tightness(X_LOWER, X_UPPER).item() == 0.625
    assert layer_tightness([WIDTH_1, WIDTH_5, WIDTH_0]) == [1.0, 5.0, 0.0]
    assert log_tightness_ratio(X_LOWER, X_UPPER, [WIDTH_1, WIDTH_5]) == pytest.approx(math.log(8))


def test_tightness_loss_by_hand() -> None:
    layers = [WIDTH_1, WIDTH_5, WIDTH_0]
    assert tightness_loss(X_LOWER, X_UPPER, layers, TAU).item() == pytest.approx(0.75 / 3)
    # τ = 1: (0.375 + 0.875 + 0) / 3.
    assert tightness_loss(X_LOWER, X_UPPER, layers, tau=1.0).item() == pytest.approx(1.25 / 3)


@pytest.mark.parametrize("width", [0.0, 1e-14])
def test_tightness_clamp(width: float) -> None:
    # Ê(Δ0) = 1e-13 over a layer narrower than 1e-12: the ratio is 1e-13/1e-12 = 0.1.
    x_lower = torch.zeros(2, dtype=torch.float64)
    x_upper = torch.full((2,), 2e-13, dtype=torch.float64)
    narrow = layer([0.0, 0.0], [2 * width, 2 * width])
    assert tightness_loss(x_lower, x_upper, [narrow], TAU).item() == pytest.approx(0.8)


def test_tightness_loss_gradient() -> None:
    generator = torch.Generator().manual_seed(1)
    x_lower = -torch.rand(2, 3, generator=generator, dtype=torch.float64) * 0.1
    x_upper = torch.rand(2, 3, generator=generator, dtype=torch.float64) * 0.1
    lower = torch.randn(2, 4, generator=generator, dtype=torch.float64) - 1
    upper = lower + torch.rand(2, 4, generator=generator, dtype=torch.float64) * 2
    inputs = tuple(t.requires_grad_(True) for t in (x_lower, x_upper, lower, upper))
    assert tightness_loss(*inputs[:2], [inputs[2:]], TAU).item() > 0
    assert torch.autograd.gradcheck(lambda a, b, c, d: tightness_loss(a, b, [(c, d)], TAU), inputs)


def test_std_loss_by_hand_and_gradient() -> None:
    wide = layer([0, 1, 2], [2, 3, 4])  # c = 1, 2, 3: std 1 → 0
    narrow = layer([-1, -0.8, -0.6], [1, 1.2, 1.4])  # c = 0, 0.2, 0.4: std 0.2 → 0.3/0.5
    assert std_loss([wide, narrow]).item() == pytest.approx(0.3)
    lower, upper = (t.clone().requires_grad_(True) for t in narrow)
    assert torch.autograd.gradcheck(lambda lo, up: std_loss([(lo, up)]), (lower, upper))


def test_relu_state() -> None:
    first = (torch.tensor([[1.0, -1.0], [-2.0, 0.0]]), torch.tensor([[2.0, 1.0], [-1.0, 0.0]]))
    second = (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 3.0, 4.0]))
    state = relu_state([first, second])
    assert state == ReluState(active=[0.25, 1.0], inactive=[0.25, 0.0], unstable=[0.5, 0.0])
    assert state.mean_active == 0.625
    assert state.mean_inactive == 0.125
    assert state.mean_unstable == 0.25


def test_warmup_regularizer_sums_selected_terms_and_returns_all() -> None:
    layers = [WIDTH_1, WIDTH_5, LAYER_A]
    total, parts = warmup_regularizer(X_LOWER, X_UPPER, layers, OURS_TERMS, TAU)
    assert set(parts) == {"tightness", "relu", "std"}
    assert parts["tightness"].item() == pytest.approx(tightness_loss(X_LOWER, X_UPPER, layers, TAU).item())
    assert parts["relu"].item() == pytest.approx(relu_loss(layers, TAU).item())
    assert parts["std"].item() == pytest.approx(std_loss(layers).item())
    assert total.item() == pytest.approx(parts["tightness"].item() + parts["relu"].item())
    only_std, _ = warmup_regularizer(X_LOWER, X_UPPER, layers, terms=("std",), tau=TAU)
    assert only_std.item() == pytest.approx(parts["std"].item())
    nothing, _ = warmup_regularizer(X_LOWER, X_UPPER, layers, terms=(), tau=TAU)
    assert nothing.item() == 0.0


def test_warmup_regularizer_gradient_flows_to_the_bounds() -> None:
    lower, upper = (t.clone().requires_grad_(True) for t in LAYER_A)
    x_upper = X_UPPER.clone().requires_grad_(True)
    total, _ = warmup_regularizer(X_LOWER, x_upper, [(lower, upper)], OURS_TERMS, TAU)
    total.backward()
    assert x_upper.grad.abs().sum() > 0 and lower.grad.abs().sum() > 0


def test_bad_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown regularizer"):
        warmup_regularizer(X_LOWER, X_UPPER, [LAYER_A], terms=("tightness", "l1"), tau=TAU)
    with pytest.raises(ValueError, match="empty"):
        relu_loss([], TAU)
    with pytest.raises(ValueError, match=r"pre_activation\[1\]"):
        relu_state([LAYER_A, (torch.zeros(2), torch.zeros(3))])
    with pytest.raises(ValueError, match="tau"):
        tightness_loss(X_LOWER, X_UPPER, [LAYER_A], tau=0.0)


# --- The fused pass (fastcert.method.regularizers._BoundSums) against a plain autograd reference -------


def reference_terms(
    x_lower: torch.Tensor, x_upper: torch.Tensor, layers: list[Layer], tau: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(L_tightness, L_relu, L_std) written out plainly: full-size centers, ``torch.where`` masks,
    torch's ``std``, autograd for the gradient; edge cases decided as the module says."""
    width0 = ((x_upper - x_lower) / 2).mean()
    tightness, relu, std = [], [], []
    for lower, upper in layers:
        c = (upper + lower) / 2
        zero, one = c.new_zeros(()), c.new_ones(())
        tightness.append(F.relu(tau - width0 / ((upper - lower) / 2).mean().clamp(min=1e-12)) / tau)
        active, inactive = lower > 0, upper < 0
        deviation = (c - c.mean()) ** 2
        active_sum, inactive_sum = torch.where(active, c, zero).sum(), -torch.where(inactive, c, zero).sum()
        active_var, inactive_var = (
            torch.where(active, deviation, zero).sum(),
            torch.where(inactive, deviation, zero).sum(),
        )
        alpha = active_sum / torch.where(inactive_sum == 0, one, inactive_sum)
        beta = active_var / torch.where(inactive_var == 0, one, inactive_var)
        alpha = torch.minimum(alpha, 1 / alpha.clamp(min=1e-12))
        beta = torch.where(inactive_var == 0, zero, torch.minimum(beta, 1 / beta.clamp(min=1e-12)))
        term = (F.relu(tau - alpha) + F.relu(tau - beta)) / tau
        counted = (inactive_sum != 0) & ((inactive_var != 0) | (active_var != 0)) & term.isfinite()
        relu.append(torch.where(counted, term, zero))
        std.append(F.relu(tau - c.std()) / tau)
    return torch.stack(tightness).mean(), torch.stack(relu).mean(), torch.stack(std).mean()


def random_layer(generator: torch.Generator, shape: tuple[int, ...], shift: float, spread: float = 1.0) -> Layer:
    center = torch.randn(shape, generator=generator, dtype=torch.float64) * spread + shift
    radius = torch.rand(shape, generator=generator, dtype=torch.float64) * spread
    return center - radius, center + radius


def mixed_layers() -> list[Layer]:
    """Random layers (several ReLU states, offsets, channels-last and transposed layouts) and the
    hand-made edge cases, so that slices, layouts and every IEEE branch meet the reference."""
    generator = torch.Generator().manual_seed(3)
    channels_last = tuple(
        t.contiguous(memory_format=torch.channels_last) for t in random_layer(generator, (3, 4, 5, 6), 0.3)
    )
    transposed = tuple(t.t() for t in random_layer(generator, (9, 6), -0.4))
    return [
        random_layer(generator, (5, 7), -1.0),
        channels_last,
        transposed,
        random_layer(generator, (4, 10), 1e4, spread=3.0),
        random_layer(generator, (41,), 0.2),
        LAYER_A,
        NO_INACTIVE,
        ALL_UNSTABLE,
        NO_ACTIVE,
        NO_ACTIVE_FLAT,
        FLAT_INACTIVE,
        layer([-1.0, -1.0, -1.0], [3.0, 3.0, 3.0]),  # constant centers: std 0, relu 0/0
    ]


def leaves(layers: list[Layer]) -> list[Layer]:
    return [(lo.detach().clone().requires_grad_(True), up.detach().clone().requires_grad_(True)) for lo, up in layers]


def grads(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    return [torch.zeros_like(t) if t.grad is None else t.grad for t in tensors]


@pytest.mark.parametrize("chunk", [None, 7])
@pytest.mark.parametrize("tau", [0.5, 3.0])
def test_fused_terms_match_reference_values_and_gradients(
    monkeypatch: pytest.MonkeyPatch, chunk: int | None, tau: float
) -> None:
    if chunk is not None:  # slices of 7 elements: every layer spans several, the last one ragged
        monkeypatch.setattr(regularizers, "_CPU_CHUNK", chunk)
    layers = mixed_layers()
    weights = (0.7, 1.3, 0.4)  # every term reaches the gradient with its own weight

    ref_box, ref_layers = leaves([(X_LOWER, X_UPPER)]), leaves(layers)
    reference = reference_terms(*ref_box[0], ref_layers, tau)
    sum(w * t for w, t in zip(weights, reference)).backward()
    ref_tensors = [t for pair in ref_box + ref_layers for t in pair]

    fused_box, fused_layers = leaves([(X_LOWER, X_UPPER)]), leaves(layers)
    _, parts = warmup_regularizer(*fused_box[0], fused_layers, terms=REGULARIZER_TERMS, tau=tau)
    fused = (parts["tightness"], parts["relu"], parts["std"])
    sum(w * t for w, t in zip(weights, fused)).backward()
    fused_tensors = [t for pair in fused_box + fused_layers for t in pair]

    for value, expected in zip(fused, reference):
        assert value.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-15)
    if tau == 3.0:  # L_relu and L_std are active, so their gradients are compared too
        assert reference[1].item() > 0 and reference[2].item() > 0
    for got, want in zip(grads(fused_tensors), grads(ref_tensors)):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)

    # The standalone functions are the same terms.
    alone = (
        tightness_loss(X_LOWER, X_UPPER, layers, tau),
        relu_loss(layers, tau),
    )
    for value, expected in zip(alone, reference):
        assert value.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-15)


def test_fused_gradient_matches_finite_differences_across_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(regularizers, "_CPU_CHUNK", 5)
    generator = torch.Generator().manual_seed(4)
    layers = [
        random_layer(generator, (2, 3, 2, 2), 0.2),
        random_layer(generator, (3, 4), -0.3),
    ]
    layers[0] = tuple(t.contiguous(memory_format=torch.channels_last) for t in layers[0])
    inputs = tuple(t.clone().requires_grad_(True) for pair in [(X_LOWER, X_UPPER), *layers] for t in pair)

    def total(*t: torch.Tensor) -> torch.Tensor:
        pairs = [(t[k], t[k + 1]) for k in range(2, len(t), 2)]
        return warmup_regularizer(t[0], t[1], pairs, terms=REGULARIZER_TERMS, tau=3.0)[0]

    assert total(*inputs).item() > 0
    assert torch.autograd.gradcheck(total, inputs)


def test_std_of_constant_centers_has_zero_gradient_like_torch() -> None:
    lower, upper = (t.clone().requires_grad_(True) for t in layer([-1.0, 0.0, 1.0], [3.0, 2.0, 1.0]))
    loss = std_loss([(lower, upper)])
    assert loss.item() == 1.0  # std 0: ReLU(τ)/τ
    loss.backward()
    assert torch.equal(lower.grad, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(upper.grad, torch.zeros(3, dtype=torch.float64))


@pytest.mark.parametrize("offset", [0.0, 1e2, 1e4])
def test_float32_sums_are_accurate_on_offset_bounds(monkeypatch: pytest.MonkeyPatch, offset: float) -> None:
    # Active centers near a large offset, a few inactive ones: Σ_A (c − m)² is small next to
    # Σ_A c², and the expanded form Σc² − 2mΣc + m²N is off by 8e-4 (offset 1e2) and 2e-4 (1e4)
    # here in float32. (The spread grows with the offset: with a spread of 1 at 1e4, the last
    # bit of any float32 mean already moves Σ_A (c − m)² by 1e-4, the authors' direct form too.)
    monkeypatch.setattr(regularizers, "_CPU_CHUNK", 1 << 14)
    generator = torch.Generator().manual_seed(5)
    n = 50_000
    center = torch.randn(n, generator=generator) * max(1.0, offset / 100) + offset + 2
    center[: n // 1000] = -1 - torch.rand(n // 1000, generator=generator)
    radius = torch.rand(n, generator=generator) * 0.5
    lower, upper = center - radius, center + radius
    got = regularizers._layer_sums([(lower, upper)], centers=True)
    lo, up = lower.double(), upper.double()
    c = (lo + up) / 2
    dev = (c - c.mean()) ** 2
    active, inactive = lo > 0, up < 0
    expected = {
        "mean_half_width": ((up - lo) / 2).mean(),
        "active_sum": c[active].sum(),
        "inactive_sum": -c[inactive].sum(),
        "active_var": dev[active].sum(),
        "inactive_var": dev[inactive].sum(),
        "variance": c.var(),
    }
    for name, want in expected.items():
        value = getattr(got, name)[0].item()
        assert value == pytest.approx(want.item(), rel=1e-5), name


@pytest.mark.parametrize("chunk", [None, 3])
def test_relu_state_counts_across_slices_and_layouts(monkeypatch: pytest.MonkeyPatch, chunk: int | None) -> None:
    if chunk is not None:
        monkeypatch.setattr(regularizers, "_CPU_CHUNK", chunk)
    layers = mixed_layers()
    state = relu_state(layers)
    for k, (lower, upper) in enumerate(layers):
        n = lower.numel()
        assert state.active[k] == (lower > 0).sum().item() / n
        assert state.inactive[k] == (upper < 0).sum().item() / n
        assert state.unstable[k] == pytest.approx(1 - state.active[k] - state.inactive[k], abs=1e-15)
    # the device-side fractions a training loop averages are the same numbers, bit for bit
    assert relu_counts(layers).fractions().tolist() == [state.active, state.inactive, state.unstable]


def test_mixed_dtypes_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"pre_activation\[1\].*float32.*differs"):
        relu_loss([LAYER_A, (torch.zeros(2), torch.zeros(2))], TAU)
    with pytest.raises(ValueError, match="floating point"):
        relu_state([(torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))])


@pytest.mark.parametrize("chunk", [None, 4])
def test_warmup_regularizer_with_counts_is_both_calls_in_one(
    monkeypatch: pytest.MonkeyPatch, chunk: int | None
) -> None:
    if chunk is not None:
        monkeypatch.setattr(regularizers, "_CPU_CHUNK", chunk)
    layers = mixed_layers()
    separate, together = leaves(layers), leaves(layers)
    total, parts = warmup_regularizer(X_LOWER, X_UPPER, separate, terms=("relu", "std"), tau=3.0)
    state = relu_state(separate)
    total.backward()
    total_2, parts_2, counts_2 = warmup_regularizer_with_counts(
        X_LOWER, X_UPPER, together, terms=("relu", "std"), tau=3.0
    )
    total_2.backward()
    assert counts_2.state() == state
    assert total_2.item() == total.item()
    assert {k: v.item() for k, v in parts_2.items()} == {k: v.item() for k, v in parts.items()}
    separate_tensors = [t for pair in separate for t in pair]
    together_tensors = [t for pair in together for t in pair]
    for got, want in zip(grads(together_tensors), grads(separate_tensors)):
        assert torch.equal(got, want)


def test_gradients_keep_the_bounds_layout_and_are_not_views() -> None:
    # Not views: autograd adds another term's gradient into them in place instead of copying.
    generator = torch.Generator().manual_seed(6)
    lower, upper = (
        t.contiguous(memory_format=torch.channels_last).requires_grad_(True)
        for t in random_layer(generator, (2, 3, 4, 5), 0.1)
    )
    grad_lower, grad_upper = torch.autograd.grad(relu_loss([(lower, upper)], tau=3.0), (lower, upper))
    for grad, bound in ((grad_lower, lower), (grad_upper, upper)):
        assert grad.stride() == bound.stride() and grad._base is None
        assert grad.abs().sum() > 0
