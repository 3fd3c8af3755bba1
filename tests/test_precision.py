"""The float32 policy (fastcert.method.precision): no TF32 in any verified or certified number,
TF32 in training only when the spec asks, every caller setting restored.

On CPU the flags are observable although no TF32 kernel runs: spies on ``F.conv2d``/``F.linear``
record what CUDA would have done during the bound computation. tests/test_cuda.py runs the
soundness checks on a GPU with TF32 enabled globally.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from soundness import single_thread  # noqa: F401  (autouse: tiny tensors, shared cores)
from torch import nn
from train_configs import train_config

from fastcert.method import precision
from fastcert.method.precision import certification, float32_precision, tf32_in_use
from fastcert.run.data import load_dataset
from fastcert.run.training import train
from fastcert.run.verify import verify

NEW_API = precision._NEW_API
OFF = {"matmul": False, "conv": False}
ON = {"matmul": True, "conv": True}


def settings() -> dict[str, Any]:
    """Every setting the policy touches, as a caller would read it (a legacy getter may raise)."""
    readings: dict[str, Any] = {}
    getters: dict[str, Callable[[], Any]] = {
        "cuda.matmul.allow_tf32": lambda: torch.backends.cuda.matmul.allow_tf32,
        "cudnn.allow_tf32": lambda: torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision,
    }
    if NEW_API:
        for name, knob in {
            "generic": torch.backends,
            "cuda": torch.backends.cudnn,
            "mkldnn": torch.backends.mkldnn,
            **precision._knobs(),
        }.items():
            getters[name] = lambda knob=knob: knob.fp32_precision
    for name, getter in getters.items():
        try:
            readings[name] = getter()
        except RuntimeError:
            readings[name] = "unreadable"
    return readings


@pytest.fixture(autouse=True)
def restore_settings() -> Iterator[None]:
    """Each test may change the process-wide settings; put back the defaults afterwards."""
    legacy = torch.get_float32_matmul_precision()
    allow = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    saved = {name: knob.fp32_precision for name, knob in precision._knobs().items()} if NEW_API else {}
    generic = torch.backends.fp32_precision if NEW_API else None
    yield
    torch.set_float32_matmul_precision(legacy)
    if NEW_API:
        torch.backends.fp32_precision = generic
        for name, knob in precision._knobs().items():
            knob.fp32_precision = saved[name]
    else:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = allow


def enable_tf32_legacy() -> None:
    torch.set_float32_matmul_precision("high")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def enable_tf32_new_api() -> None:
    if not NEW_API:
        pytest.skip("torch < 2.9 has no fp32_precision settings")
    torch.backends.fp32_precision = "tf32"


def enable_tf32_per_op() -> None:
    if not NEW_API:
        pytest.skip("torch < 2.9 has no fp32_precision settings")
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    torch.backends.cudnn.conv.fp32_precision = "tf32"


CALLERS = {
    "defaults": lambda: None,  # cuDNN convolutions already allow TF32 by default
    "legacy": enable_tf32_legacy,
    "new-api-generic": enable_tf32_new_api,
    "new-api-per-op": enable_tf32_per_op,
}


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_certification_turns_tf32_off_and_restores_the_caller_setting(caller: str) -> None:
    CALLERS[caller]()
    before, outside = settings(), tf32_in_use()
    assert outside["conv"], "cuDNN convolutions allow TF32 in every caller setting tried here"
    with certification():
        assert tf32_in_use() == {"matmul": False, "conv": False}
        if NEW_API:
            assert torch.backends.mkldnn.matmul.fp32_precision == "ieee"
    assert settings() == before and tf32_in_use() == outside


def test_restored_after_an_exception_and_when_nested() -> None:
    enable_tf32_legacy()
    before = settings()
    with pytest.raises(KeyError), certification():
        raise KeyError("boom")
    assert settings() == before
    with float32_precision(tf32=True):
        assert tf32_in_use() == {"matmul": True, "conv": True}
        with certification():
            assert tf32_in_use() == {"matmul": False, "conv": False}
        assert tf32_in_use() == {"matmul": True, "conv": True}
    assert settings() == before


def test_legacy_flags_where_torch_has_no_fp32_precision_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch < 2.9: the three legacy settings are set and restored (simulated on a newer torch)."""
    monkeypatch.setattr(precision, "_NEW_API", False)
    enable_tf32_legacy()
    with certification():
        assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
        assert torch.get_float32_matmul_precision() == "highest"
        assert tf32_in_use() == OFF
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)
    assert torch.get_float32_matmul_precision() == "high" and tf32_in_use() == ON


class FlagSpy:
    """Records (grad enabled, TF32 state) at every convolution and linear layer call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[bool, dict[str, bool]]] = []
        for name in ("conv2d", "linear"):
            original = getattr(F, name)
            monkeypatch.setattr(F, name, self._wrap(original))

    def _wrap(self, original: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
            self.calls.append((torch.is_grad_enabled(), tf32_in_use()))
            return original(*args, **kwargs)

        return spy

    def states(self, *, grad: bool) -> list[dict[str, bool]]:
        return [state for enabled, state in self.calls if enabled == grad]


@pytest.fixture(scope="module")
def data():  # type: ignore[no-untyped-def]
    return load_dataset("mnist", source="synthetic", train_size=32, test_size=16, seed=0)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 4, stride=4), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 7 * 7, 10)
    )


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_verify_bounds_without_tf32_when_the_caller_enabled_it(
    data: Any, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    _, test, info = data
    enable_tf32_legacy()
    before = settings()
    spy = FlagSpy(monkeypatch)
    verify(small_net(), test, info, 0.01, method, batch_size=8)
    assert spy.calls and all(state == OFF for _, state in spy.calls)
    assert settings() == before


@pytest.mark.parametrize("tf32", [False, True])
def test_training_uses_tf32_only_when_asked_and_evaluation_never(
    data: Any, monkeypatch: pytest.MonkeyPatch, tf32: bool
) -> None:
    """The test pass (verified error, best-checkpoint choice) runs without TF32 either way."""
    train_split, test, info = data
    enable_tf32_legacy()
    before = settings()
    spy = FlagSpy(monkeypatch)
    config = train_config(
        eps_train=0.1, eps_test=0.1, start=1, length=1, epochs=2, batch_size=16, tf32=tf32, augment=False
    )
    train(small_net(), train_split, test, info, config)
    training_states, evaluation_states = spy.states(grad=True), spy.states(grad=False)
    assert training_states and evaluation_states
    assert all(state == (ON if tf32 else OFF) for state in training_states)
    assert all(state == OFF for state in evaluation_states)
    assert settings() == before
