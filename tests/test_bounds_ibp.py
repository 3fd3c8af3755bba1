"""IBP bounds against auto_LiRPA's numbers (tests/fixtures/auto_lirpa), BN statistics and running
stats, plan compilation and input checks."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from fixture_nets import NAMES, fixture_tensor, load_arrays, load_model, relative_error
from torch import nn

from fastcert.method.bounds import bound_pass, compile_plan, compute_bounds, plan_for
from fastcert.method.models import PartialBatchNorm1d, PartialBatchNorm2d, Residual

MODES = ("eval", "train")
EPS = ("eps_small", "eps_large")
REL_TOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def single_thread() -> Iterator[None]:
    """These tensors are tiny: one thread is faster, and far faster on a shared, loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=NAMES)
def fixture(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, load_arrays(request.param)


def assert_close(got: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """README §1: relative to the largest magnitude in the reference array, plus 1."""
    err = relative_error(got, ref)
    assert err <= REL_TOL, f"{what}: relative error {err:.2e}"


def robust_ce(margin_lower: torch.Tensor) -> torch.Tensor:
    """``log(1 + Σ exp(-lb))`` per example."""
    return torch.logsumexp(torch.cat([margin_lower.new_zeros(len(margin_lower), 1), -margin_lower], 1), 1)


def bn_modules(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("eps", EPS)
def test_ibp_matches_auto_lirpa_f64(fixture: tuple[str, dict[str, Any]], mode: str, eps: str) -> None:
    name, arrays = fixture
    x, C = fixture_tensor(arrays, "x"), fixture_tensor(arrays, "C")
    x_lower, x_upper = fixture_tensor(arrays, f"{eps}/x_L"), fixture_tensor(arrays, f"{eps}/x_U")
    prefix = f"{mode}/{eps}/ibp"

    logits_pass = bound_pass(load_model(name, arrays).train(mode == "train"), x, x_lower, x_upper)
    margin_pass = bound_pass(load_model(name, arrays).train(mode == "train"), x, x_lower, x_upper, C=C)

    assert_close(logits_pass.clean, fixture_tensor(arrays, f"{mode}/logits_f64"), "clean logits")
    assert_close(margin_pass.clean, fixture_tensor(arrays, f"{mode}/logits_f64"), "clean logits (with C)")
    assert_close(logits_pass.lower, fixture_tensor(arrays, f"{prefix}/logit_lb_f64"), "logit lb")
    assert_close(logits_pass.upper, fixture_tensor(arrays, f"{prefix}/logit_ub_f64"), "logit ub")
    assert_close(margin_pass.lower, fixture_tensor(arrays, f"{prefix}/margin_lb_f64"), "margin lb")
    assert_close(margin_pass.upper, fixture_tensor(arrays, f"{prefix}/margin_ub_f64"), "margin ub")
    relus = len(arrays["relu_names"])
    for result in (logits_pass, margin_pass):
        assert len(result.pre_activation) == relus
        for k, (lower, upper) in enumerate(result.pre_activation):
            assert_close(lower, fixture_tensor(arrays, f"{prefix}/pre_relu{k}_lb_f64"), f"pre-ReLU {k} lb")
            assert_close(upper, fixture_tensor(arrays, f"{prefix}/pre_relu{k}_ub_f64"), f"pre-ReLU {k} ub")
    loss_key = f"{mode}/{eps}/loss/ibp_robust_ce"
    per_example = robust_ce(margin_pass.lower)
    assert_close(per_example, fixture_tensor(arrays, f"{loss_key}_per_sample_f64"), "robust CE per example")
    assert_close(per_example.mean(), fixture_tensor(arrays, f"{loss_key}_f64"), "robust CE")


@pytest.mark.parametrize("mode", MODES)
def test_float32_margins_match(fixture: tuple[str, dict[str, Any]], mode: str) -> None:
    """The float32 model (as in training) agrees with auto_LiRPA's float32 bounds."""
    name, arrays = fixture
    model = load_model(name, arrays, torch.float32).train(mode == "train")
    f32 = torch.float32
    result = bound_pass(
        model,
        fixture_tensor(arrays, "x", f32),
        fixture_tensor(arrays, "eps_large/x_L", f32),
        fixture_tensor(arrays, "eps_large/x_U", f32),
        C=fixture_tensor(arrays, "C", f32),
    )
    assert result.lower.dtype == f32
    assert_close(result.lower, fixture_tensor(arrays, f"{mode}/eps_large/ibp/margin_lb"), "margin lb f32")
    assert_close(result.upper, fixture_tensor(arrays, f"{mode}/eps_large/ibp/margin_ub"), "margin ub f32")


def test_train_mode_statistics_and_running_stats(fixture: tuple[str, dict[str, Any]]) -> None:
    """Train mode: BN uses the clean batch's mean and biased variance (= the stored ones) and
    updates the running stats once per pass, exactly as torch's own train-mode forward does; an
    eval-mode pass leaves every buffer untouched."""
    name, arrays = fixture
    x = fixture_tensor(arrays, "x")
    model = load_model(name, arrays).train()
    reference = copy.deepcopy(model)
    before = copy.deepcopy(model.state_dict())
    values_per_channel: dict[str, int] = {}
    for bn_name, bn in bn_modules(reference).items():
        bn.register_forward_pre_hook(
            lambda m, args, key=bn_name: values_per_channel.__setitem__(key, args[0].numel() // args[0].shape[1])
        )

    bound_pass(model, x, fixture_tensor(arrays, "eps_large/x_L"), fixture_tensor(arrays, "eps_large/x_U"))
    reference(x)

    for bn_name, bn in bn_modules(model).items():
        mean = fixture_tensor(arrays, f"train/bn_batch_mean/{bn_name}_f64")
        var = fixture_tensor(arrays, f"train/bn_batch_var/{bn_name}_f64")
        count = values_per_channel[bn_name]
        old_mean, old_var = before[f"{bn_name}.running_mean"], before[f"{bn_name}.running_var"]
        torch.testing.assert_close(bn.running_mean, 0.9 * old_mean + 0.1 * mean, rtol=1e-10, atol=1e-12)
        unbiased = var * count / (count - 1)
        torch.testing.assert_close(bn.running_var, 0.9 * old_var + 0.1 * unbiased, rtol=1e-10, atol=1e-12)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-12, atol=1e-14, msg=key)

    model.eval()
    after_train = copy.deepcopy(model.state_dict())
    bound_pass(model, x, fixture_tensor(arrays, "eps_small/x_L"), fixture_tensor(arrays, "eps_small/x_U"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, after_train[key]), f"eval-mode pass changed {key}"


# --- BN semantics on small random networks ----------------------------------------------------
def small_bn_net(momentum: float | None, centralize: bool, unitize: bool) -> nn.Sequential:
    def bn2(c: int) -> nn.Module:
        return (
            PartialBatchNorm2d(c, centralize=centralize, unitize=unitize)
            if not (centralize and unitize)
            else nn.BatchNorm2d(c)
        )

    def bn1(c: int) -> nn.Module:
        return (
            PartialBatchNorm1d(c, centralize=centralize, unitize=unitize)
            if not (centralize and unitize)
            else nn.BatchNorm1d(c)
        )

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        bn2(4),
        nn.ReLU(),
        Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), bn2(4))),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 6),
        bn1(6),
        nn.ReLU(),
        nn.Linear(6, 3),
    ).double()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
            nn.init.uniform_(module.weight, -1.5, 1.5)
            nn.init.uniform_(module.bias, -0.3, 0.3)
    return model


@pytest.mark.parametrize(
    ("momentum", "centralize", "unitize"),
    [(0.1, True, True), (None, True, True), (0.3, False, True), (0.1, True, False), (None, False, False)],
)
def test_clean_logits_and_running_stats_follow_torch(momentum: float | None, centralize: bool, unitize: bool) -> None:
    """Over three train-mode passes and one eval pass, ``clean`` equals ``model(x)`` and every
    buffer (running mean/var, num_batches_tracked) evolves exactly as under torch's forward."""
    model = small_bn_net(momentum, centralize, unitize)
    reference = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(1)
    for step, training in enumerate([True, True, True, False]):
        model.train(training)
        reference.train(training)
        x = torch.randn(7, 2, 5, 5, generator=generator, dtype=torch.float64) + step
        result = bound_pass(model, x, x - 0.1, x + 0.1)
        torch.testing.assert_close(result.clean, reference(x), rtol=1e-12, atol=1e-12)
        for key, value in reference.state_dict().items():
            torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-12, atol=1e-14, msg=key)


def test_bn_without_running_stats_or_affine_uses_batch_statistics() -> None:
    model = nn.Sequential(
        nn.Linear(3, 4), nn.BatchNorm1d(4, affine=False, track_running_stats=False), nn.ReLU()
    ).double()
    model.eval()
    x = torch.randn(5, 3, dtype=torch.float64)
    result = bound_pass(model, x, x, x)
    torch.testing.assert_close(result.clean, model(x))


def test_train_mode_needs_more_than_one_value_per_channel() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).train()
    x = torch.randn(1, 3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bound_pass(model, x, x - 0.1, x + 0.1)


# --- degenerate boxes -------------------------------------------------------------------------
def test_zero_radius_box_on_x_gives_clean_logits() -> None:
    """``x`` itself as both bounds (what ``input_box`` returns at ε = 0): a plain clean forward."""
    model = small_bn_net(0.1, True, True).train()
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    reference = copy.deepcopy(model)
    result = bound_pass(model, x, x, x)
    torch.testing.assert_close(result.clean, reference(x), rtol=1e-12, atol=1e-12)
    assert torch.equal(result.lower, result.clean) and torch.equal(result.upper, result.clean)
    for lower, upper in result.pre_activation:
        assert torch.equal(lower, upper)


def test_zero_width_box_of_separate_tensors_bounds_the_point() -> None:
    """Zero width is not looked for in the values (that would read the device): such a box takes
    the general path, whose zero radii give bounds equal to the clean logits up to rounding."""
    model = small_bn_net(0.1, True, True).train()
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    result = bound_pass(model, x, x.clone(), x.clone())
    torch.testing.assert_close(result.lower, result.clean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(result.upper, result.clean, rtol=1e-12, atol=1e-12)
    assert (result.lower <= result.upper).all()


def test_zero_radius_box_off_x_bounds_the_box_point() -> None:
    """A point box away from x: bounds are the network at that point, with x's BN statistics."""
    model = small_bn_net(0.1, True, True).train()
    x = torch.randn(4, 2, 5, 5, dtype=torch.float64)
    point = x + 0.5
    result = bound_pass(model, x, point, point)
    widened = bound_pass(copy.deepcopy(model), x, point - 1e-9, point + 1e-9)
    torch.testing.assert_close(result.lower, result.upper)
    torch.testing.assert_close(result.lower, widened.lower, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(result.clean, widened.clean)


# --- API: methods, spec matrix, input checks, plan ---------------------------------------------
def test_unknown_method_is_rejected() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="unknown bound method 'alpha'"):
        compute_bounds(model, x, x, x, method="alpha")


def test_compute_bounds_equals_bound_pass() -> None:
    model = small_bn_net(0.1, True, True).eval()
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    C = torch.randn(3, 4, 3, dtype=torch.float64)
    lower, upper = compute_bounds(model, x, x - 0.05, x + 0.05, C=C)
    result = bound_pass(model, x, x - 0.05, x + 0.05, C=C)
    assert torch.equal(lower, result.lower) and torch.equal(upper, result.upper)
    assert lower.shape == (3, 4) and result.clean.shape == (3, 3)


def test_folding_C_is_tighter_than_C_on_logit_intervals() -> None:
    model = small_bn_net(0.1, True, True).eval()
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    C = torch.randn(3, 4, 3, dtype=torch.float64)
    lower, upper = compute_bounds(model, x, x - 0.05, x + 0.05)
    folded_lower, folded_upper = compute_bounds(model, x, x - 0.05, x + 0.05, C=C)
    center, radius = (upper + lower) / 2, (upper - lower) / 2
    naive_center = torch.einsum("bmk,bk->bm", C, center)
    naive_radius = torch.einsum("bmk,bk->bm", C.abs(), radius)
    torch.testing.assert_close((folded_upper + folded_lower) / 2, naive_center)
    assert ((folded_upper - folded_lower) / 2 <= naive_radius + 1e-12).all()
    assert ((folded_upper - folded_lower) / 2 < naive_radius - 1e-6).any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x_lower": torch.zeros(2, 4)}, "same shape"),
        ({"C": torch.zeros(3, 1, 2)}, "C must be"),
    ],
)
def test_bad_inputs(kwargs: dict[str, torch.Tensor], message: str) -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    args = {"x": torch.zeros(2, 3), "x_lower": torch.zeros(2, 3), "x_upper": torch.ones(2, 3)} | kwargs
    with pytest.raises(ValueError, match=message):
        bound_pass(model, args["x"], args["x_lower"], args["x_upper"], C=args.get("C"))


def test_an_inverted_box_is_refused_by_a_device_side_assertion() -> None:
    """No host read of the box: ``torch._assert_async`` raises at once on the CPU (a GPU would
    abort at its next synchronization instead of computing on)."""
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match="x_lower must be <= x_upper"):
        bound_pass(model, torch.zeros(2, 3), torch.zeros(2, 3), -torch.ones(2, 3))


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (nn.Sequential(nn.Linear(3, 3), nn.Tanh()), "unsupported module Tanh at '1'"),
        (nn.Sequential(OrderedDict(a=nn.Sequential(OrderedDict(b=nn.Dropout())))), "Dropout at 'a.b'"),
        (nn.Sequential(nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")), "padding_mode='reflect'"),
        (nn.Sequential(nn.Flatten(0)), "start_dim=0"),
        (nn.Tanh(), "Tanh at '<model>'"),
    ],
)
def test_unsupported_modules_raise_type_error_with_path(model: nn.Module, message: str) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        compile_plan(model)


def test_structural_residual_is_recognised() -> None:
    """A foreign block with the children branch/shortcut/relu compiles like ``Residual``."""

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.branch = nn.Linear(3, 3)
            self.shortcut = nn.Linear(3, 3)
            self.relu = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.branch(x) + self.shortcut(x))

    model = nn.Sequential(Block(), nn.Linear(3, 2)).double()
    kinds = [op.kind for op in compile_plan(model).ops]
    assert kinds == ["linear", "linear", "add", "relu", "linear"]
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(bound_pass(model, x, x, x).clean, model(x))


def test_plan_is_cached_and_recompiled_when_modules_change() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    plan = plan_for(model)
    assert plan_for(model) is plan
    model[1] = nn.Identity()
    replanned = plan_for(model)
    assert replanned is not plan and [op.kind for op in replanned.ops] == ["linear", "linear"]


# --- gradients --------------------------------------------------------------------------------
def tiny_train_net() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.BatchNorm2d(2))),
        nn.Flatten(),
        nn.Linear(2 * 3 * 3, 4),
        nn.BatchNorm1d(4),
        nn.ReLU(),
        nn.Linear(4, 3),
    ).double()
    for bn in bn_modules(model).values():
        nn.init.uniform_(bn.weight, -1.5, 1.5)
        nn.init.uniform_(bn.bias, -0.3, 0.3)
    return model.train()


def test_bounds_are_differentiable_through_train_mode_bn_statistics() -> None:
    """Autograd matches central finite differences (float64) for every parameter entry; finite
    differences see the batch statistics move with the weights, so detached statistics would fail."""
    model = tiny_train_net()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4, 1, 3, 3, generator=generator, dtype=torch.float64)
    C = torch.randn(4, 2, 3, generator=generator, dtype=torch.float64)
    probes = [torch.randn(4, 2, generator=generator, dtype=torch.float64) for _ in range(3)]

    def objective() -> torch.Tensor:
        result = bound_pass(model, x, x - 0.05, x + 0.05, C=C)
        lower, upper = result.pre_activation[-1]
        return (
            (probes[0] * result.lower).sum()
            + (probes[1] * result.upper).sum()
            + (probes[2][:, :1] * result.clean).sum()
            + (lower * upper).sum()
        )

    model.zero_grad()
    objective().backward()
    step = 1e-6
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        numeric = torch.zeros_like(param)
        with torch.no_grad():
            for index in range(param.numel()):
                flat = param.view(-1)
                flat[index] += step
                up = objective()
                flat[index] -= 2 * step
                down = objective()
                flat[index] += step
                numeric.view(-1)[index] = (up - down) / (2 * step)
        torch.testing.assert_close(param.grad, numeric, rtol=1e-5, atol=1e-6, msg=name)

    # with the statistics frozen at their values (detached), the first conv's gradient differs
    frozen = copy.deepcopy(model).eval()
    for bn, (mean, var) in zip(bn_modules(frozen).values(), _batch_statistics(model, x)):
        bn.running_mean, bn.running_var = mean, var
    frozen.zero_grad()
    result = bound_pass(frozen, x, x - 0.05, x + 0.05, C=C)
    (probes[0] * result.lower).sum().backward()
    model.zero_grad()
    (probes[0] * bound_pass(model, x, x - 0.05, x + 0.05, C=C).lower).sum().backward()
    assert not torch.allclose(frozen[0].weight.grad, model[0].weight.grad, rtol=1e-3)


def _batch_statistics(model: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Mean and biased variance of each BN input under torch's train-mode forward, in module order."""
    probe = copy.deepcopy(model).train()
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for name, bn in bn_modules(probe).items():
        bn.register_forward_pre_hook(
            lambda m, args, key=name: stats.__setitem__(
                key, torch.var_mean(args[0].detach(), [0] + list(range(2, args[0].dim())), correction=0)[::-1]
            )
        )
    probe(x)
    return [stats[name] for name in bn_modules(probe)]


def test_overlapping_passes_get_correct_gradients() -> None:
    """Two passes alive before one backward (the reused |W| buffers must not be shared)."""
    model = tiny_train_net()
    generator = torch.Generator().manual_seed(2)
    xs = [torch.randn(4, 1, 3, 3, generator=generator, dtype=torch.float64) for _ in range(2)]

    def loss(x: torch.Tensor) -> torch.Tensor:
        return bound_pass(model, x, x - 0.1, x + 0.1).lower.sum()

    separate = []
    for x in xs:
        model.zero_grad()
        loss(x).backward()
        separate.append([p.grad.clone() for p in model.parameters()])
    model.zero_grad()
    (loss(xs[0]) + loss(xs[1])).backward()
    for param, first, second in zip(model.parameters(), *separate):
        torch.testing.assert_close(param.grad, first + second)


def test_reusing_buffers_of_a_retained_graph_raises() -> None:
    """A retained graph whose |W| buffer a later pass overwrote fails loudly, never silently."""
    model = tiny_train_net()
    x = torch.randn(4, 1, 3, 3, dtype=torch.float64)
    first = bound_pass(model, x, x - 0.1, x + 0.1).lower.sum()
    first.backward(retain_graph=True)
    bound_pass(model, x, x - 0.2, x + 0.2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        first.backward()


STRIDED_POINTWISE_SCRIPT = """
import torch
from torch import nn
from fastcert.method.bounds import bound_pass
from fastcert.method.losses import robust_ce, spec_matrix

def gradients(method):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 4, 1, stride=2, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 32 * 32, 10)
    )
    x = torch.rand(64, 4, 64, 64)
    y = torch.arange(64) % 10
    for _ in range(3):
        model.zero_grad()
        out = bound_pass(model, x, (x - 0.01).clamp(0, 1), (x + 0.01).clamp(0, 1), C=spec_matrix(y, 10), method=method)
        robust_ce(out.lower).backward()
    return [p.grad.clone() for p in model.parameters()]

for method in ("ibp", "crown-ibp"):
    ours = gradients(method)
    with torch.backends.mkldnn.flags(enabled=False):
        reference = gradients(method)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3 * b.abs().max().item())
print("ok")
"""


def test_strided_pointwise_conv_gradients_on_cpu_do_not_hit_the_onednn_heap_bug() -> None:
    """oneDNN 3.13 corrupts the heap in the weight gradient of a channels-last 1×1 stride-2 conv with
    few channels at 64×64 (the process aborts): run in a subprocess so that a regression fails this
    test instead of killing the suite. Gradients must equal the non-oneDNN kernels'."""
    result = subprocess.run(
        [sys.executable, "-c", STRIDED_POINTWISE_SCRIPT], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode, result.stderr[-2000:])


def test_cpu_traversal_and_crown_coefficients_stay_channels_last(monkeypatch: pytest.MonkeyPatch) -> None:
    """Channels-last on CPU from the first layer on, also where one channel makes the layout
    ambiguous (torch then picks NCHW for some results): the transposed convolutions of the CROWN
    pass get channels-last coefficients (2-3x faster in oneDNN; benchmarks/README.md)."""
    model = nn.Sequential(
        nn.Conv2d(1, 1, 3, padding=1),
        nn.BatchNorm2d(1),
        nn.ReLU(),
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 1, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    ).eval()
    x = torch.rand(2, 1, 8, 8)
    transposed_inputs: list[torch.Tensor] = []
    conv_transpose2d = torch.nn.functional.conv_transpose2d

    def recording(A: torch.Tensor, *args: Any) -> torch.Tensor:
        transposed_inputs.append(A)
        return conv_transpose2d(A, *args)

    monkeypatch.setattr(torch.nn.functional, "conv_transpose2d", recording)
    result = bound_pass(model, x, x - 0.1, x + 0.1, method="crown-ibp")
    assert [tuple(lower.shape[1:2]) for lower, _ in result.pre_activation] == [(1,), (4,), (4,)]
    for bounds in result.pre_activation:
        assert all(b.is_contiguous(memory_format=torch.channels_last) for b in bounds)
    assert len(transposed_inputs) == 3
    assert all(A.is_contiguous(memory_format=torch.channels_last) for A in transposed_inputs)
