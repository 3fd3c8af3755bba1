"""Float32 arithmetic policy: TF32 only where asked for, never in a certificate.

Why: on Ampere and later GPUs PyTorch runs cuDNN convolutions in TF32 by default
(``torch.backends.cudnn.allow_tf32`` is True) and float32 matmuls follow
``torch.set_float32_matmul_precision``. TF32 keeps 10 mantissa bits, so a bound computed in TF32
can certify a point that the float32 network does not: every verified/certified number is computed
under :func:`certification` (TF32 off for convolutions and matmuls), whatever the process-wide
setting was, and training uses TF32 only when its run spec says ``tf32: true``. oneDNN's reduced
precision modes on CPU are kept off in both (fastcert never asks for them).

torch >= 2.9 has per-backend ``fp32_precision`` settings beside the legacy flags; mixing the two
makes the legacy getters raise. The context saves and restores both (the legacy matmul precision
only where it can be read), so a caller's setting comes back exactly as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch

FLOAT32 = "float32"
TF32 = "tf32"


def label(tf32: bool) -> str:
    """The precision name recorded in ``result.json``: ``"tf32"`` or ``"float32"``."""
    return TF32 if tf32 else FLOAT32


def _knobs() -> dict[str, Any]:
    """torch >= 2.9: the per-operation settings (each an object with ``fp32_precision``)."""
    backends = torch.backends
    return {
        "cuda.matmul": backends.cuda.matmul,
        "cudnn.conv": backends.cudnn.conv,  # type: ignore[attr-defined]
        "mkldnn.matmul": backends.mkldnn.matmul,  # type: ignore[attr-defined]
        "mkldnn.conv": backends.mkldnn.conv,  # type: ignore[attr-defined]
    }


def _has_new_api() -> bool:
    try:
        knobs = _knobs()
    except AttributeError:
        return False
    return hasattr(torch.backends, "fp32_precision") and all(hasattr(k, "fp32_precision") for k in knobs.values())


_NEW_API = _has_new_api()


def _legacy_matmul_precision() -> str | None:
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:  # torch >= 2.9 after the caller mixed the legacy and the new API
        return None


@contextmanager
def float32_precision(tf32: bool) -> Iterator[None]:
    """Run the block with TF32 on (``tf32``) or off for CUDA convolutions and matmuls.

    Restores every setting on exit, also on an exception. Not thread-safe (the settings are
    process-wide); fastcert computes on one thread.
    """
    legacy = _legacy_matmul_precision()
    saved_flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) if not _NEW_API else None
    saved_knobs = {name: knob.fp32_precision for name, knob in _knobs().items()} if _NEW_API else {}
    try:
        if legacy is not None:
            torch.set_float32_matmul_precision("high" if tf32 else "highest")
        if _NEW_API:
            mode = TF32 if tf32 else "ieee"
            for name, knob in _knobs().items():
                knob.fp32_precision = mode if name.startswith("cud") else "ieee"
        else:
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        yield
    finally:
        if legacy is not None:
            torch.set_float32_matmul_precision(legacy)
        for name, knob in _knobs().items() if _NEW_API else ():
            knob.fp32_precision = saved_knobs[name]
        if saved_flags is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved_flags


def certification() -> AbstractContextManager[None]:
    """The precision of every verified or certified number: float32 throughout, no TF32."""
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
    return "ieee"
