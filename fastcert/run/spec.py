"""The run spec (``RUN.yaml``): schema, defaults, validation and identity hash.

A training job on a cluster may wait hours in a queue before it starts, so every mistake in a spec
(an unknown key, a wrong type, an impossible value) must be caught up front, by a message that names
the key path and, for choices, the valid values. Validation also resolves the method's defaults
(``init``/``regularizers`` = null, from the method table :mod:`fastcert.methods`), so that two specs
describing the same run have the same hash:
the hash identifies a run directory's experiment and guards resume against a changed spec.

Beyond each value on its own, validation checks that the spec still *means* the experiment it
names, against the dataset sizes of the torch-free catalog (so the workflow's parse-time validation
catches it too): a batch no larger than the training set, an accumulation that divides the batch
into BatchNorm-able sub-batches, an ε ramp that ends inside the training with at least one epoch
at ε_target (the best checkpoint is chosen among those epochs), milestones inside
the training, and a width that leaves every layer at least one channel. A run that violates one of
these would train, but not as certified training of that model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

from fastcert.datasets import DATASETS as DATASET_CATALOG
from fastcert.datasets import SOURCES
from fastcert.io import load_yaml
from fastcert.methods import TRAINING_METHODS
from fastcert.phases import ramp_end
from fastcert.vocabulary import BN_MODES, INIT_SCHEMES, MODELS, REGULARIZER_TERMS

DATASETS = tuple(DATASET_CATALOG)
ALL_SOURCES = tuple(dict.fromkeys(source for sources in SOURCES.values() for source in sources))
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
# PyYAML reads "5e-4" (no dot) as a string; accept such numbers written in scientific notation.
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
# Keys that say where a run executes, not what it computes: left out of the identity hash so that
# a run can resume on another kind of machine.
_PLACEMENT_KEYS = ("device",)
# The smallest channel count (per conv group) of each model at width 1: the models scale every count
# by ``width`` and round, clamping at 1, so below half a channel here a layer would silently keep
# one channel. Checked against fastcert.method.models by tests/test_spec.py.
SMALLEST_LAYER = {
    ("cnn7", "mnist"): 64,
    ("cnn7", "cifar10"): 64,
    ("cnn7", "tinyimagenet"): 64,
    ("wide_resnet", "mnist"): 16,
    ("wide_resnet", "cifar10"): 16,
    ("wide_resnet", "tinyimagenet"): 16,
    ("resnext", "mnist"): 32,
    ("resnext", "cifar10"): 32,
    ("resnext", "tinyimagenet"): 8,
}
# Keys added after runs had been recorded: left out of the hash at their default value, so that
# every existing run directory keeps its identity.
_HASHED_UNLESS_DEFAULT = {"tf32": False}
# torch.manual_seed takes seeds in [0, 2**64) (numpy's global generator is given the seed modulo 2**32).
MAX_SEED = 2**64 - 1
# A spec is a few hundred bytes; a larger file is something else, and YAML would take long to parse it.
MAX_SPEC_BYTES = 1 << 20


class SpecError(ValueError):
    """An invalid run spec; the message starts with the offending key path."""


@dataclass(frozen=True)
class DataSpec:
    """Where the data comes from and how much of it is used (None = the full split)."""

    source: str = "auto"
    root: str | None = None
    train_size: int | None = None
    test_size: int | None = None


@dataclass(frozen=True)
class ScheduleSpec:
    """ε schedule in the authors' notation: ε = 0 before epoch ``start``, ramp over ``length``
    epochs, ``epochs`` in all; MultiStepLR milestones in epochs."""

    start: int = 2
    length: int = 80
    epochs: int = 160
    milestones: tuple[int, ...] = (120, 140)

    @property
    def ramp_end(self) -> int:
        """Last epoch of the warmup (= last epoch with the regularizers on)."""
        return ramp_end(self.start, self.length)


@dataclass(frozen=True)
class RunSpec:
    """A validated, default-resolved run spec (see docs/architecture.md "Run spec")."""

    dataset: str = "cifar10"
    data: DataSpec = DataSpec()
    model: str = "cnn7"
    width: float = 1.0
    bn: str = "full"
    bn_centralize: bool = True
    bn_unitize: bool = True
    method: str = "ours"
    init: str | None = None
    regularizers: tuple[str, ...] | None = None
    lambda0: float = 0.5
    tau: float = 0.5
    constant_lambda: bool = False
    loss_fusion: bool = True
    schedule: ScheduleSpec = ScheduleSpec()
    eps_train: float = 0.03137254901960784
    eps_test: float = 0.03137254901960784
    batch_size: int = 128
    grad_accumulation: int = 1
    lr: float = 0.0005
    grad_clip: float = 10.0
    seed: int = 100
    device: str = "auto"
    tf32: bool = False  # TF32 for training's float32 convs/matmuls (CUDA); certification never uses it

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (tuples as lists), the inverse of :func:`validate`."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def hash(self) -> str:
        """SHA-256 of the canonical JSON of everything that defines the experiment."""
        identity = {
            k: v
            for k, v in self.to_dict().items()
            if k not in _PLACEMENT_KEYS and not (k in _HASHED_UNLESS_DEFAULT and v == _HASHED_UNLESS_DEFAULT[k])
        }
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


# --- field checkers: each returns the normalized value or raises SpecError naming the path ---


def _fail(path: str, message: str) -> SpecError:
    return SpecError(f"{path}: {message}")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _int(path: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"expected an integer, got {_type_name(value)} {value!r}")
    if minimum is not None and value < minimum:
        raise _fail(path, f"must be >= {minimum}, got {_shown(value)}")
    return value


def _shown(value: int) -> str:
    """An integer for a message: its digits, unless there are too many to read (or for str() to write)."""
    return str(value) if abs(value) < 10**40 else "an integer of more than 40 digits"


def _seed(path: str, value: Any) -> int:
    seed = _int(path, value)
    if not 0 <= seed <= MAX_SEED:
        raise _fail(path, f"must lie in [0, {MAX_SEED}] (2**64 - 1, the most torch accepts), got {_shown(seed)}")
    return seed


def _float(path: str, value: Any, *, positive: bool = False, minimum: float | None = None) -> float:
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(path, f"expected a number, got {_type_name(value)} {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the float range
        raise _fail(path, f"must be finite, got an integer of {len(str(abs(value)))} digits") from None
    if not math.isfinite(number):
        raise _fail(path, f"must be finite, got {number}")
    if positive and not number > 0:
        raise _fail(path, f"must be > 0, got {number}")
    if minimum is not None and number < minimum:
        raise _fail(path, f"must be >= {minimum}, got {number}")
    return number


def _bool(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(path, f"expected true or false, got {_type_name(value)} {value!r}")
    return value


def _choice(path: str, value: Any, valid: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise _fail(path, f"unknown value {value!r}; valid values: {', '.join(valid)}")
    return value


def _optional(check: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    return lambda path, value: None if value is None else check(path, value)


def _eps(path: str, value: Any) -> float:
    eps = _float(path, value)
    if not 0 < eps <= 1:
        raise _fail(path, f"must lie in (0, 1] (pixel units of [0, 1] images), got {eps}")
    return eps


def _device(path: str, value: Any) -> str:
    if not isinstance(value, str) or not DEVICE_PATTERN.fullmatch(value):
        raise _fail(path, f"unknown device {value!r}; valid values: auto, cpu, cuda, cuda:N")
    return value


def _root(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(path, f"expected a directory path, got {_type_name(value)} {value!r}")
    return value


def _init(path: str, value: Any) -> str:
    return _choice(path, value, INIT_SCHEMES)


def _regularizers(path: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _fail(path, f"expected a list (subset of {', '.join(REGULARIZER_TERMS)}), got {_type_name(value)}")
    terms = tuple(_choice(f"{path}[{i}]", term, REGULARIZER_TERMS) for i, term in enumerate(value))
    if len(set(terms)) != len(terms):
        raise _fail(path, f"duplicate terms in {list(terms)}")
    return terms


def _milestones(path: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise _fail(path, f"expected a list of epochs, got {_type_name(value)}")
    epochs = tuple(_int(f"{path}[{i}]", m, minimum=1) for i, m in enumerate(value))
    if any(b <= a for a, b in pairwise(epochs)):
        raise _fail(path, f"must be strictly increasing, got {list(epochs)}")
    return epochs


_DATA_FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "source": lambda p, v: _choice(p, v, ALL_SOURCES),
    "root": _optional(_root),
    "train_size": _optional(lambda p, v: _int(p, v, minimum=1)),
    "test_size": _optional(lambda p, v: _int(p, v, minimum=1)),
}

_SCHEDULE_FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "start": lambda p, v: _int(p, v, minimum=1),
    "length": lambda p, v: _int(p, v, minimum=1),
    "epochs": lambda p, v: _int(p, v, minimum=1),
    "milestones": _milestones,
}

_TOP_FIELDS: dict[str, Callable[[str, Any], Any]] = {
    "dataset": lambda p, v: _choice(p, v, DATASETS),
    "model": lambda p, v: _choice(p, v, MODELS),
    "width": lambda p, v: _float(p, v, positive=True),
    "bn": lambda p, v: _choice(p, v, BN_MODES),
    "bn_centralize": _bool,
    "bn_unitize": _bool,
    "method": lambda p, v: _choice(p, v, tuple(TRAINING_METHODS)),
    "init": _optional(_init),
    "regularizers": _optional(_regularizers),
    "lambda0": lambda p, v: _float(p, v, minimum=0.0),
    "tau": lambda p, v: _float(p, v, positive=True),
    "constant_lambda": _bool,
    "loss_fusion": _bool,
    "eps_train": _eps,
    "eps_test": _eps,
    "batch_size": lambda p, v: _int(p, v, minimum=1),
    "grad_accumulation": lambda p, v: _int(p, v, minimum=1),
    "lr": lambda p, v: _float(p, v, positive=True),
    "grad_clip": lambda p, v: _float(p, v, positive=True),
    "seed": _seed,
    "device": _device,
    "tf32": _bool,
}


def _section(path: str, raw: Any, fields: Mapping[str, Callable[[str, Any], Any]]) -> dict[str, Any]:
    """Check one mapping: no unknown keys, every given value through its checker."""
    if not isinstance(raw, Mapping):
        raise _fail(path or "spec", f"expected a mapping, got {_type_name(raw)}")
    prefix = f"{path}." if path else ""
    unknown = [str(key) for key in raw if key not in fields]
    if unknown:
        raise _fail(prefix + unknown[0], f"unknown key; valid keys: {', '.join(sorted(fields))}")
    return {key: fields[key](prefix + key, value) for key, value in raw.items()}


_TOP_FIELDS["data"] = lambda p, v: DataSpec(**_section(p, v, _DATA_FIELDS))
_TOP_FIELDS["schedule"] = lambda p, v: ScheduleSpec(**_section(p, v, _SCHEDULE_FIELDS))


def _check_data(spec: RunSpec) -> None:
    sources = SOURCES[spec.dataset]
    if spec.data.source not in sources:
        raise _fail(
            "data.source",
            f"{spec.data.source!r} is not available for dataset {spec.dataset}; valid values: {', '.join(sources)}",
        )
    full = DATASET_CATALOG[spec.dataset]
    for key, size, limit in (
        ("train_size", spec.data.train_size, full.n_train),
        ("test_size", spec.data.test_size, full.n_test),
    ):
        if size is not None and size > limit:
            raise _fail(f"data.{key}", f"{size} exceeds the {limit} examples of {spec.dataset}")


def _n_train(spec: RunSpec) -> int:
    """Training examples the run will see: the subset size, else the dataset's full training set."""
    return spec.data.train_size or DATASET_CATALOG[spec.dataset].n_train


def _check_batches(spec: RunSpec) -> None:
    """Batch size and accumulation against the training set (as fastcert.run.training batches it:
    the last partial batch is kept, and each loader batch is cut into ``grad_accumulation`` parts)."""
    n_train, batch, parts = _n_train(spec), spec.batch_size, spec.grad_accumulation
    if batch > n_train:
        raise _fail(
            "batch_size",
            f"{batch} is larger than the {n_train} training examples of {spec.dataset} (data.train_size); "
            "so no batch would have that size",
        )
    if batch % parts:
        raise _fail("grad_accumulation", f"{parts} does not divide batch_size {batch} into equal sub-batches")
    if spec.bn != "none":
        last = n_train % batch
        smallest = min(batch // parts, last // parts if last else batch)
        if smallest < 2:
            raise _fail(
                "batch_size",
                f"{batch} with grad_accumulation {parts} on {n_train} training examples gives a sub-batch "
                f"of {smallest} example(s) (the last batch has {last or batch}); BatchNorm needs at least 2",
            )


def _check_schedule(spec: RunSpec) -> None:
    """The ε ramp ends inside the training and leaves at least one epoch at ε_target.

    ε reaches ε_target at the first batch of epoch start+length whatever the number of batches per
    epoch (fastcert.method.schedule), so a short ramp of few batches may jump, but always arrives."""
    schedule = spec.schedule
    first_target = schedule.ramp_end + 1
    if schedule.epochs < first_target:
        raise _fail(
            "schedule.epochs",
            f"{schedule.epochs} epochs leave no epoch at eps_target: the ramp (start={schedule.start}, "
            f"length={schedule.length}) ends with epoch {schedule.ramp_end}, so epochs must be >= "
            f"{first_target} (the best checkpoint is chosen among epochs at eps_target)",
        )
    late = [m for m in schedule.milestones if m > schedule.epochs]
    if late:
        raise _fail("schedule.milestones", f"{late} lie after the last epoch (epochs = {schedule.epochs})")


def _check_width(spec: RunSpec) -> None:
    smallest = SMALLEST_LAYER[(spec.model, spec.dataset)]
    if spec.width * smallest < 0.5:
        raise _fail(
            "width",
            f"{spec.width:g} gives the smallest layer of {spec.model} on {spec.dataset} ({smallest} channels at "
            f"width 1) {spec.width * smallest:.3g} channels, which rounds to none; use width >= {0.5 / smallest:g}",
        )


def _check_consistency(spec: RunSpec) -> None:
    _check_data(spec)
    _check_batches(spec)
    _check_schedule(spec)
    _check_width(spec)
    if spec.bn == "none" and not (spec.bn_centralize and spec.bn_unitize):
        raise _fail("bn_centralize", "BN switches need BatchNorm layers, but bn is 'none'")


def validate(raw: Any) -> RunSpec:
    """Check a parsed spec mapping and return it as a default-resolved :class:`RunSpec`."""
    top = _section("", raw, _TOP_FIELDS)
    method = TRAINING_METHODS[top.get("method", RunSpec.method)]
    if top.get("init") is None:
        top["init"] = method.init
    if top.get("regularizers") is None:
        top["regularizers"] = method.regularizers
    spec = RunSpec(**top)
    _check_consistency(spec)
    return spec


def load(path: str | Path) -> RunSpec:
    """Read and validate a YAML (or JSON) spec file; errors name the file."""
    file = Path(path)
    try:
        with file.open("rb") as stream:
            data = stream.read(MAX_SPEC_BYTES + 1)
    except OSError as error:
        raise SpecError(f"{file}: cannot read spec ({error.strerror or error})") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(f"{file}: larger than {MAX_SPEC_BYTES} bytes, not a run spec (a spec is a few hundred bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(
            f"{file}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); a spec is a YAML file"
        ) from None
    try:
        raw = load_yaml(text)
    except (yaml.YAMLError, ValueError, RecursionError) as error:  # PyYAML's constructors raise plain ValueErrors
        reason = " ".join(str(error).split()) or type(error).__name__
        raise SpecError(f"{file}: not valid YAML: {reason}") from None
    if raw is None or raw == {}:
        raise SpecError(
            f"{file}: spec: the spec is empty; write the run's keys (at least dataset, model, method; "
            'see docs/architecture.md "Run spec")'
        )
    try:
        return validate(raw)
    except SpecError as error:
        raise SpecError(f"{file}: {error}") from None
