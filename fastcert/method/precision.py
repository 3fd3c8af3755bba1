"""Float32 arithmetic policy: TF32 only where asked for, never in a certificate.

Why: on Ampere and later GPUs PyTorch runs cuDNN convolutions in TF32 by default
(``torch.backends.cudnn.allow_tf32`` is True) and float32 matmuls follow
``torch.set_float32_matmul_precision``. TF32 keeps 10 mantissa bits, so a bound computed in TF32
can certify a point that the float32 network does not: every verified/certified number is computed
under :func:`certification` (TF32 off for convolutions, RNNs and matmuls), whatever the
process-wide setting was, and training uses TF32 only when its run spec says ``tf32: true``.
oneDNN's reduced precision modes on CPU are kept off in both (fastcert never asks for them).

torch >= 2.9 keeps per-backend, per-operation ``fp32_precision`` settings *beside* two legacy
values (cuDNN's ``allow_tf32`` and the matmul precision); the legacy getters refuse to answer while
the two disagree (e.g. conv and RNN set differently), which breaks anything that reads them
(``torch.backends.cudnn.flags()``, ``torch.compile``'s autotuning). So :func:`float32_precision`
sets both, consistently, and restores both exactly as the caller had them, the legacy values
included (read with the new settings momentarily at "ieee", where the getters always answer).

``NVIDIA_TF32_OVERRIDE`` in the environment is read by cuBLAS and cuDNN themselves and overrides
every setting made here ("0": TF32 never used). It is recorded with each result (:func:`record`)
and a certification under it warns.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from fastcert.records import PrecisionDetail

FLOAT32 = "float32"
TF32 = "tf32"
IEEE = "ieee"
TF32_OVERRIDE = "NVIDIA_TF32_OVERRIDE"


def label(tf32: bool) -> str:
    """The precision name recorded in ``result.json``: ``"tf32"`` or ``"float32"``."""
    return TF32 if tf32 else FLOAT32


def tf32_override() -> str | None:
    """The value of ``NVIDIA_TF32_OVERRIDE`` if it is set (NVIDIA's libraries apply it over ours)."""
    return os.environ.get(TF32_OVERRIDE)


def record(tf32: bool) -> PrecisionDetail:
    """The ``precision`` entry of ``result.json`` of a run whose spec says ``tf32``."""
    return {"training": label(tf32), "certification": FLOAT32, "nvidia_tf32_override": tf32_override()}


def _knobs() -> dict[str, Any]:
    """torch >= 2.9: the per-operation settings (each an object with ``fp32_precision``)."""
    backends = torch.backends
    return {
        "cuda.matmul": backends.cuda.matmul,
        "cudnn.conv": backends.cudnn.conv,  # type: ignore[attr-defined]
        "cudnn.rnn": backends.cudnn.rnn,
        "mkldnn.matmul": backends.mkldnn.matmul,  # type: ignore[attr-defined]
        "mkldnn.conv": backends.mkldnn.conv,  # type: ignore[attr-defined]
        "mkldnn.rnn": backends.mkldnn.rnn,  # type: ignore[attr-defined]
    }


def _inherited() -> dict[str, Any]:
    """torch >= 2.9: the settings an operation's ``"none"`` inherits from, outermost first (setting
    one also sets everything below it, so they are restored in this order, before the operations)."""
    backends = torch.backends
    return {"generic": backends, "cudnn": backends.cudnn, "mkldnn": backends.mkldnn}


def _has_new_api() -> bool:
    try:
        knobs = {**_inherited(), **_knobs()}
    except AttributeError:
        return False
    return all(hasattr(knob, "fp32_precision") for knob in knobs.values())


_NEW_API = _has_new_api()


def _legacy() -> tuple[bool, str]:
    """``(cudnn.allow_tf32, float32 matmul precision)`` as torch's legacy values hold them."""
    if not _NEW_API:
        return torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    knobs = _knobs()
    saved = {name: knob.fp32_precision for name, knob in knobs.items()}
    try:
        for name in ("cudnn.conv", "cudnn.rnn", "cuda.matmul", "mkldnn.matmul"):
            knobs[name].fp32_precision = IEEE
        matmul = torch.get_float32_matmul_precision()  # answers whenever both matmuls are "ieee"
        try:
            cudnn = torch.backends.cudnn.allow_tf32  # answers iff the legacy value is False too
        except RuntimeError:
            cudnn = True
    finally:
        for name, knob in knobs.items():
            knob.fp32_precision = saved[name]
    return cudnn, matmul


def _settings() -> tuple[tuple[bool, str], dict[str, str]]:
    """Everything :func:`float32_precision` changes: the legacy values and the new settings."""
    knobs = {**_inherited(), **_knobs()} if _NEW_API else {}
    return _legacy(), {name: knob.fp32_precision for name, knob in knobs.items()}


def _apply(legacy: tuple[bool, str], knobs: dict[str, str]) -> None:
    """Set the legacy values (their setters also write the new settings), then the new settings."""
    torch.backends.cudnn.allow_tf32, matmul = legacy
    torch.set_float32_matmul_precision(matmul)
    every = {**_inherited(), **_knobs()} if _NEW_API else {}
    for name, value in knobs.items():  # in the order of ``every``: inherited settings first
        every[name].fp32_precision = value


@contextmanager
def float32_precision(tf32: bool) -> Iterator[None]:
    """Run the block with TF32 on (``tf32``) or off for CUDA convolutions, RNNs and matmuls.

    The legacy getters (``torch.backends.cudnn.allow_tf32``, ``torch.backends.cuda.matmul.allow_tf32``,
    ``torch.get_float32_matmul_precision()``) answer inside and agree with the new settings.
    Restores every setting on exit, also on an exception. Not thread-safe (the settings are
    process-wide); fastcert computes on one thread.
    """
    saved = _settings()
    try:
        mode = TF32 if tf32 else IEEE  # CUDA's settings; generic and oneDNN (CPU) ones stay "ieee"
        every = {**_inherited(), **_knobs()} if _NEW_API else {}
        knobs = {name: mode if name.startswith("cud") else IEEE for name in every}
        _apply((tf32, "high" if tf32 else "highest"), knobs)
        yield
    finally:
        _apply(*saved)


def certification() -> AbstractContextManager[None]:
    """The precision of every verified or certified number: float32 throughout, no TF32."""
    override = tf32_override()
    if override is not None:
        warnings.warn(
            f"{TF32_OVERRIDE}={override!r} is set: cuBLAS and cuDNN apply it over this certification's "
            "float32 settings ('0' keeps TF32 off too); result.json records the value",
            RuntimeWarning,
            stacklevel=2,
        )
    return float32_precision(tf32=False)


def tf32_in_use() -> dict[str, bool]:
    """Whether CUDA matmuls and convolutions would run in TF32 now (what the tests observe)."""
    if _NEW_API:
        knobs = _knobs()
        return {"matmul": _resolved(knobs["cuda.matmul"]) == TF32, "conv": _resolved(knobs["cudnn.conv"]) == TF32}
    return {"matmul": torch.backends.cuda.matmul.allow_tf32, "conv": torch.backends.cudnn.allow_tf32}


def _resolved(knob: Any) -> str:
    """A CUDA op's setting with ``none`` (inherit) resolved through the CUDA backend's and the generic one."""
    inherited = (torch.backends.cudnn.fp32_precision, torch.backends.fp32_precision)  # type: ignore[attr-defined]
    for value in (knob.fp32_precision, *inherited):
        if value != "none":
            return value
    return IEEE
