"""Verified error of a trained model under a cascade of verifiers (library side of ``fastcert verify``).

A *verifier* here is a bound method used to certify a trained model (the training methods of
:mod:`fastcert.run.training` are another thing): IBP, CROWN-IBP or CROWN. The paper reports
IBP-verified errors (its CROWN-IBP models are tested with pure IBP at ε_max). CROWN-IBP and CROWN
run *intersected with IBP* (:mod:`fastcert.method.bounds.crown`): every intermediate and final
bound is the tighter of IBP's and their own, so each certifies at least what IBP certifies. Plain
CROWN does not: on the demo's IBP-trained CNN-7 it certifies none of the images IBP certifies
(README, "fastcert verify", has the figures), because its relaxation errors compound where IBP's
intervals were trained to be tight.

The verifiers run as a cascade, cheapest first: each one only sees the examples that the ones
before it left uncertified (and that the model classifies correctly: a misclassified example is
never certified). Each verifier's ``verified_err`` is that of the cascade stopped after it, so the
last one is "any": certified if any verifier certifies.

Evaluation is in eval mode (running BN statistics, so the result does not depend on the batch
size), without gradients, in float32 without TF32 (:func:`fastcert.method.precision.certification`);
an example is certified iff every margin lower bound ``z_y − z_j`` (C folded into the last layer)
is positive. With a shard folder, the split is verified in shards of consecutive examples whose
counts are written atomically one file each; a rerun (after a kill, or as another cluster job)
reads the finished shards and only verifies the others.

Torch and the bound engine are imported on the first call: ``fastcert verify --help`` lists the
verifiers and their default batch sizes from here without importing them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypedDict

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from fastcert.datasets import DatasetInfo
    from fastcert.run.data.splits import Split

VERIFIERS = ("ibp", "crown-ibp", "crown")  # cheapest first: the cascade's order
DEFAULT_BATCH = {"ibp": 256, "crown-ibp": 64, "crown": 8}  # examples per bound pass on a CPU
# On a GPU: every GiB of free memory (half of it kept for temporaries and other processes) takes the
# CPU batches once more, up to MAX_BATCH_SCALE times; CROWN's chunks take that half at ~8 live
# float32 tensors of a chunk's size (the coefficients, their ReLU relaxation's temporaries).
GPU_BYTES_PER_BATCH_SET = 2**30
MAX_BATCH_SCALE = 64
CHUNK_LIVE_TENSORS = 8
DEFAULT_SHARD_SIZE = 1000


class ShardError(ValueError):
    """A shard file that is damaged or belongs to another verification."""


class Stage(TypedDict):
    """One verifier of the cascade: examples it tried and certified, the cascade's verified error
    after it (fraction of all examples), its time in seconds."""

    tried: int
    certified: int
    verified_err: float
    seconds: float


class Verification(TypedDict):
    """Fractions in [0, 1] over ``n`` examples; ``verified_err`` is the whole cascade's ("any")."""

    standard_err: float
    verified_err: float
    n: int
    verifiers: dict[str, Stage]


def parse_verifiers(names: str | Sequence[str]) -> tuple[str, ...]:
    """Verifier names (a comma-separated string or a sequence) in cascade order, without repeats."""
    listed = [name.strip() for name in names.split(",")] if isinstance(names, str) else list(names)
    unknown = [name for name in listed if name not in VERIFIERS]
    if unknown or not listed:
        raise ValueError(f"unknown verifier {', '.join(map(repr, unknown)) or '(none)'}; valid: {', '.join(VERIFIERS)}")
    return tuple(name for name in VERIFIERS if name in listed)


class Sizes(NamedTuple):
    """Examples per bound pass of each verifier, and CROWN's chunk (None: the engine's CPU default)."""

    batch: dict[str, int]
    chunk_elements: int | None


def verification_sizes(device: torch.device, free_bytes: int | None = None) -> Sizes:
    """Batch sizes and CROWN chunks for ``device``: today's CPU sizes on a CPU (CUDA is not touched),
    sizes that grow with the free memory on a GPU (``free_bytes``: measured when not given)."""
    if device.type != "cuda":
        return Sizes(dict(DEFAULT_BATCH), None)
    if free_bytes is None:
        import torch

        free_bytes = torch.cuda.mem_get_info(device)[0]
    from fastcert.method.bounds.crown import CHUNK_ELEMENTS

    budget = free_bytes // 2
    scale = min(MAX_BATCH_SCALE, max(1, budget // GPU_BYTES_PER_BATCH_SET))
    chunk = max(CHUNK_ELEMENTS, budget // (4 * CHUNK_LIVE_TENSORS))
    return Sizes({name: size * scale for name, size in DEFAULT_BATCH.items()}, chunk)


def verify(
    model: nn.Module,
    split: Split,
    info: DatasetInfo,
    eps: float,
    verifiers: str | Sequence[str] = "ibp",
    batch_size: int | None = None,
    shard_dir: Path | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    shard_key: dict[str, Any] | None = None,
    part: tuple[int, int] | None = None,
) -> Verification:
    """Standard and verified error of ``model`` on ``split`` at ``eps`` (pixel units), cascading ``verifiers``.

    ``batch_size`` overrides every verifier's default. ``shard_dir``: keep each shard's counts there
    (``shard_key`` identifies the verification; a folder holding another verification's shards is
    refused). ``part`` = (k, n): only the shards whose index is k modulo n, e.g. one of n cluster
    jobs; a later call without it reads their shards. The model is put in eval mode and returned to
    its previous mode afterwards.
    """
    import torch

    from fastcert.method.precision import certification

    order = parse_verifiers(verifiers)
    if len(split) == 0:
        raise ValueError("cannot verify on an empty split")
    if shard_size < 1:
        raise ValueError(f"shard size must be >= 1, got {shard_size}")
    if part is not None and (shard_dir is None or not 0 <= part[0] < part[1]):
        raise ValueError(f"part {part}: needs a shard folder and 0 <= k < n")
    device_sizes = verification_sizes(split.device)
    sizes = {name: batch_size or device_sizes.batch[name] for name in order}
    key = {"verifiers": list(order), "eps": eps, "n": len(split), "shard_size": shard_size, **(shard_key or {})}
    was_training = model.training
    model.eval()
    totals = _empty_counts(order)
    try:
        with torch.no_grad(), certification():
            for index, begin in enumerate(range(0, len(split), shard_size)):
                if part is not None and index % part[1] != part[0]:
                    continue
                path = None if shard_dir is None else shard_dir / f"shard-{index:05d}.json"
                counts = _read_shard(path, key)
                if counts is None:
                    rows = torch.arange(begin, min(begin + shard_size, len(split)))
                    subset = split.subset(rows)
                    counts = _verify_examples(model, subset, info, eps, order, sizes, device_sizes.chunk_elements)
                    if path is not None:
                        _write_shard(path, key, counts)
                _add(totals, counts)
    finally:
        model.train(was_training)
    return _fractions(totals, order)


def _verify_examples(
    model: nn.Module,
    split: Split,
    info: DatasetInfo,
    eps: float,
    order: tuple[str, ...],
    sizes: dict[str, int],
    chunk_elements: int | None,
) -> dict[str, Any]:
    """Counts of one shard: examples, misclassified, and per verifier tried/certified/seconds."""
    import torch

    from fastcert.method.losses import spec_matrix
    from fastcert.method.perturbation import input_box

    dtype = next(model.parameters()).dtype
    counts = _empty_counts(order)
    for x, y in split.batches(max(sizes.values()), shuffle=False, augment=False):
        x = x.to(dtype)
        x_lower, x_upper = input_box(x, eps, info.mean, info.std)
        C = spec_matrix(y, info.num_classes, dtype=dtype)
        done = torch.zeros(len(y), dtype=torch.bool, device=x.device)
        hopeless = torch.zeros_like(done)  # misclassified: no verifier can certify them
        for stage, name in enumerate(order):
            start = time.perf_counter()
            todo = (~(done | hopeless)).nonzero().flatten()
            for rows in todo.split(sizes[name]) if len(todo) else ():  # split() of nothing gives one empty part
                box = x[rows], x_lower[rows], x_upper[rows]
                lower, clean = _certify(model, *box, C[rows], name, chunk_elements)
                done[rows] |= lower
                if stage == 0:
                    hopeless[rows] = clean != y[rows]
            if stage == 0:
                counts["wrong"] += int(hopeless.sum())
            counts["stages"][name]["tried"] += len(todo)
            counts["stages"][name]["certified"] += int(done[todo].sum())
            counts["stages"][name]["seconds"] += time.perf_counter() - start
        counts["n"] += len(y)
    return counts


def _certify(
    model: nn.Module, x: Tensor, x_lower: Tensor, x_upper: Tensor, C: Tensor, name: str, chunk_elements: int | None
) -> tuple[Tensor, Tensor]:
    """Certified mask and clean prediction of one batch under verifier ``name`` (IBP-intersected)."""
    from fastcert.method.bounds import bound_pass
    from fastcert.method.losses import certified

    result = bound_pass(model, x, x_lower, x_upper, C=C, method=name, intersect_ibp=True, chunk_elements=chunk_elements)
    return certified(result.lower), result.clean.argmax(1)


def _empty_counts(order: tuple[str, ...]) -> dict[str, Any]:
    return {"n": 0, "wrong": 0, "stages": {name: {"tried": 0, "certified": 0, "seconds": 0.0} for name in order}}


def _add(totals: dict[str, Any], counts: dict[str, Any]) -> None:
    totals["n"] += counts["n"]
    totals["wrong"] += counts["wrong"]
    for name, stage in totals["stages"].items():
        for field in stage:
            stage[field] += counts["stages"][name][field]


def _fractions(totals: dict[str, Any], order: tuple[str, ...]) -> Verification:
    """Errors as fractions of the examples counted (0 of none: a part without shards)."""
    n = totals["n"]
    stages: dict[str, Stage] = {}
    certified = 0
    for name in order:
        counts = totals["stages"][name]
        certified += counts["certified"]
        stages[name] = {
            "tried": counts["tried"],
            "certified": counts["certified"],
            "verified_err": (n - certified) / max(n, 1),
            "seconds": round(counts["seconds"], 3),
        }
    counted = max(n, 1)
    return {
        "standard_err": totals["wrong"] / counted,
        "verified_err": (n - certified) / counted,
        "n": n,
        "verifiers": stages,
    }


def _read_shard(path: Path | None, key: dict[str, Any]) -> dict[str, Any] | None:
    """The counts of a finished shard, or None; a shard of another verification is an error."""
    if path is None or not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
        stored_key, counts = stored["key"], stored["counts"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ShardError(f"{path}: not a readable verification shard ({error}); delete it to redo the shard") from None
    if stored_key != json.loads(json.dumps(key)):
        raise ShardError(
            f"{path}: holds a shard of another verification ({stored_key}); use another folder or delete it"
        )
    return counts


def _write_shard(path: Path, key: dict[str, Any], counts: dict[str, Any]) -> None:
    from fastcert.io import atomic_write_json

    atomic_write_json(path, {"key": key, "counts": counts})
