"""The float32 policy (fastcert.method.precision): no TF32 in any verified or certified number,
TF32 in training only when the spec asks, every caller setting restored.

On CPU the flags are observable although no TF32 kernel runs: spies on ``F.conv2d``/``F.linear``
record what CUDA would have done during the bound computation. tests/test_cuda.py runs the
soundness checks on a GPU with TF32 enabled globally.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from soundness import single_thread  # noqa: F401  (autouse: tiny tensors, shared cores)
from torch import nn
from train_configs import train_config

from fastcert.method import precision
from fastcert.method.precision import certification, float32_precision, tf32_in_use
from fastcert.run.data.loading import load_dataset
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
    # outermost first: setting the generic value (or a backend's) also sets everything below it
    knobs = {"generic": torch.backends, "cudnn": torch.backends.cudnn, "mkldnn": torch.backends.mkldnn}
    knobs = {**knobs, **precision._knobs()} if NEW_API else {}
    saved = {name: knob.fp32_precision for name, knob in knobs.items()}
    yield
    torch.set_float32_matmul_precision(legacy)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = allow
    for name, knob in knobs.items():
        knob.fp32_precision = saved[name]


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


def enable_mixed_apis() -> None:
    """The legacy cuDNN flag off, then conv TF32 through the new API: the legacy getter refuses."""
    if not NEW_API:
        pytest.skip("torch < 2.9 has no fp32_precision settings")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.conv.fp32_precision = "tf32"


def legacy_readings() -> dict[str, Any]:
    return {
        "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
        "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


@pytest.mark.parametrize("tf32", [False, True])
@pytest.mark.parametrize("caller", sorted({**CALLERS, "mixed-apis": enable_mixed_apis}))
def test_the_legacy_getters_answer_inside_and_agree(caller: str, tf32: bool) -> None:
    """Issue 24 §3: conv, RNN, matmul and the legacy values set together, so that whatever reads
    the legacy flags (``cudnn.flags()``, ``torch.compile``) works inside; the caller's settings,
    the legacy values behind an unreadable getter included, come back exactly."""
    {**CALLERS, "mixed-apis": enable_mixed_apis}[caller]()
    before, hidden = settings(), precision._legacy()
    with float32_precision(tf32):
        assert legacy_readings() == {
            "cudnn.allow_tf32": tf32,
            "cuda.matmul.allow_tf32": tf32,
            "float32_matmul_precision": "high" if tf32 else "highest",
        }
        if NEW_API:
            mode = "tf32" if tf32 else "ieee"
            assert (torch.backends.cudnn.conv.fp32_precision, torch.backends.cudnn.rnn.fp32_precision) == (mode, mode)
            assert {knob.fp32_precision for name, knob in precision._knobs().items() if name.startswith("mkldnn")} == {
                "ieee"
            }
        expected = legacy_readings()
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=tf32):  # reads, sets and restores the legacy flag
            pass
        assert legacy_readings() == expected and tf32_in_use() == (ON if tf32 else OFF)
    assert settings() == before and precision._legacy() == hidden
    if caller == "mixed-apis":
        assert before["cudnn.allow_tf32"] == "unreadable" and hidden[0] is False


def test_a_certification_under_nvidia_tf32_override_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NVIDIA_TF32_OVERRIDE", "0")
    with pytest.warns(RuntimeWarning, match="NVIDIA_TF32_OVERRIDE='0' is set"), certification():
        assert tf32_in_use() == OFF
    assert precision.record(True) == {"training": "tf32", "certification": "float32", "nvidia_tf32_override": "0"}
    monkeypatch.delenv("NVIDIA_TF32_OVERRIDE")
    assert precision.record(False)["nvidia_tf32_override"] is None


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


@pytest.mark.parametrize("precision", ["float32", "tf32"])
def test_bench_step_times_in_the_precision_of_the_run_it_describes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], precision: str
) -> None:
    """benchmarks/bench_step.py --precision (default the paper's float32), whatever the caller set."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bench_step

    enable_tf32_legacy()
    before = settings()
    spy = FlagSpy(monkeypatch)
    flags = ["--precision", precision] if precision == "tf32" else []
    bench_step.main(
        ["--device", "cpu", "--dataset", "mnist", "--width", "0.0625", "--batch", "2"]
        + ["--warmup", "0", "--repeats", "1", "--steps", "clean", *flags]
    )
    assert spy.calls and all(state == (ON if precision == "tf32" else OFF) for _, state in spy.calls)
    assert f"# precision {precision} (TF32 {'on' if precision == 'tf32' else 'off'}" in capsys.readouterr().out
    assert settings() == before
