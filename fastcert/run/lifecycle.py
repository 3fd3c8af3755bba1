"""One training run on disk: the ``fastcert train`` contract (docs/architecture.md "Run outputs").

A run directory holds ``spec.json`` (the resolved spec and its hash), ``metrics.jsonl`` (one line
per completed epoch), ``checkpoint_last.pt``, ``checkpoint_best.pt`` and, once the process stops,
``result.json``. Every file is replaced atomically, so a job killed at any instant leaves a
directory that the same command resumes from: the last checkpoint is the truth, metrics lines of
later epochs are dropped, and because the checkpoint carries every RNG state and the data
generator, the resumed run is bit-identical to an uninterrupted one on CPU.

Per epoch the writes go metrics → last → best. A kill between "last" and "best" leaves a best
file older than the best epoch recorded in "last"; that epoch is then the last one, so resume
restores the best file from the last checkpoint.

The data subset (``data.train_size``/``test_size``) and synthetic data use data seed 0 for every
run, so that repeats with different ``seed`` differ only in training randomness (init, order,
augmentation).
"""

from __future__ import annotations

import json
import os
import platform
import random
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import fastcert
from fastcert.run.data import DatasetInfo, Split, load_dataset
from fastcert.run.data.splits import seeded_generator
from fastcert.method.init import initialize
from fastcert.io import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_jsonl,
    read_jsonl,
)
from fastcert.method.models import build
from fastcert.run.files import BEST_CHECKPOINT, LAST_CHECKPOINT, METRICS_FILE, RESULT_FILE, SPEC_FILE
from fastcert.run.spec import RunSpec
from fastcert.run.training import (
    Diverged,
    Interrupted,
    TrainConfig,
    epoch_summary,
    objective_for,
    train,
)

CHECKPOINT_FORMAT = "fastcert-checkpoint-1"

EXIT_COMPLETED = 0
EXIT_ERROR = 1  # an unexpected error (Python's own exit status for an uncaught exception)
EXIT_USAGE = 2  # invalid spec/arguments, a directory of another spec, no such device/dataset
EXIT_DIVERGED = 3
EXIT_SIGNAL_BASE = 128  # interrupted by signal N: 128 + N (SIGTERM 143, SIGINT 130)
EXIT_CODES_HELP = """exit status:
  0    completed (also when DIR already holds the completed run: nothing is retrained)
  1    unexpected error (traceback on stderr)
  2    invalid spec or arguments, DIR holds another spec's run, or the device or dataset is
       not available (nothing was trained)
  3    training diverged (NaN/inf loss; reason in DIR/result.json; rerunning does not retrain)
  143  stopped by SIGTERM after saving the last completed epoch; rerun the same command to resume
  130  stopped by SIGINT (Ctrl-C), likewise"""


class RunError(Exception):
    """A run that must not start (or continue) as asked; the message says why and what to do."""


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an explicit CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RunError(f"device {name!r} requested but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RunError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    return device


def train_config(spec: RunSpec) -> TrainConfig:
    """The training hyperparameters of a spec (vanilla and ours bound with IBP)."""
    return TrainConfig(
        eps_train=spec.eps_train,
        eps_test=spec.eps_test,
        start=spec.schedule.start,
        length=spec.schedule.length,
        epochs=spec.schedule.epochs,
        milestones=spec.schedule.milestones,
        bounds="crown-ibp" if spec.method == "crown-ibp" else "ibp",
        loss_fusion=spec.loss_fusion,
        regularizers=tuple(spec.regularizers or ()),
        lambda0=spec.lambda0,
        tau=spec.tau,
        constant_lambda=spec.constant_lambda,
        batch_size=spec.batch_size,
        grad_accumulation=spec.grad_accumulation,
        lr=spec.lr,
        grad_clip=spec.grad_clip,
    )


def build_model(spec: RunSpec) -> torch.nn.Module:
    """The spec's architecture with its constructor init (draws from the global torch RNG)."""
    return build(
        spec.model, spec.dataset, bn=spec.bn, width=spec.width,
        bn_centralize=spec.bn_centralize, bn_unitize=spec.bn_unitize,
    )


def load_data(spec: RunSpec, device: torch.device) -> tuple[Split, Split, DatasetInfo]:
    """Train/test splits and info of a spec, on ``device`` (data seed 0, see the module doc)."""
    return load_dataset(
        spec.dataset, root=spec.data.root, source=spec.data.source,
        train_size=spec.data.train_size, test_size=spec.data.test_size, device=device,
    )


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A fastcert checkpoint (tensors on CPU; only plain data, so safe to load)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path}: not a fastcert checkpoint")
    return checkpoint


def _git_commit() -> str | None:
    source = Path(fastcert.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=10, check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def provenance(spec: RunSpec, device: torch.device) -> dict[str, Any]:
    """What produced a result: code version, libraries, hardware, spec identity, seed."""
    return {
        "fastcert_version": fastcert.__version__,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": _device_name(device),
        "spec_hash": spec.hash(),
        "seed": spec.seed,
    }


def _phase_times(history: list[dict[str, Any]]) -> dict[str, float | None]:
    times: dict[str, list[float]] = {"eps0": [], "ramp": [], "target": []}
    for record in history:
        times[record["phase"]].append(record["epoch_time"])
    return {phase: (sum(values) / len(values) if values else None) for phase, values in times.items()}


@dataclass
class _RunDir:
    """The files of one run directory and what has been recorded in it so far."""

    path: Path
    spec: RunSpec
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None

    def file(self, name: str) -> Path:
        return self.path / name

    def claim(self) -> None:
        """Bind the directory to this spec, or refuse if it holds another spec's run."""
        self.path.mkdir(parents=True, exist_ok=True)
        spec_file = self.file(SPEC_FILE)
        if spec_file.exists():
            recorded = read_json(spec_file).get("spec_hash")
            if recorded != self.spec.hash():
                raise RunError(
                    f"{self.path} holds a run of another spec (hash {recorded} ≠ {self.spec.hash()}); "
                    "use another --out directory or delete this one"
                )
        else:
            atomic_write_json(spec_file, {"spec_hash": self.spec.hash(), "spec": self.spec.to_dict()})

    def checkpoint(self, state: dict[str, Any], kind: str) -> dict[str, Any]:
        return {
            **state,
            "format": CHECKPOINT_FORMAT,
            "train_state_format": state["format"],
            "kind": kind,
            "spec": self.spec.to_dict(),
            "spec_hash": self.spec.hash(),
            "fastcert_version": fastcert.__version__,
        }

    def resume_state(self) -> dict[str, Any] | None:
        """The last checkpoint's training state, with metrics and best file made consistent."""
        last = self.file(LAST_CHECKPOINT)
        if not last.exists():
            self.history = []
            atomic_write_jsonl(self.file(METRICS_FILE), [])
            return None
        checkpoint = load_checkpoint(last)
        if checkpoint["spec_hash"] != self.spec.hash():
            raise RunError(f"{last} was written for another spec; delete {self.path} to start over")
        epoch = checkpoint["epoch"]
        self.history = [r for r in read_jsonl(self.file(METRICS_FILE)) if r["epoch"] <= epoch]
        if [r["epoch"] for r in self.history] != list(range(1, epoch + 1)):
            raise RunError(f"{self.file(METRICS_FILE)} lacks epochs of {last} (epoch {epoch})")
        atomic_write_jsonl(self.file(METRICS_FILE), self.history)
        self.best = checkpoint["best"]
        if self.best is not None and self.best["epoch"] == epoch:
            best_file = self.file(BEST_CHECKPOINT)
            if not best_file.exists() or load_checkpoint(best_file)["epoch"] != epoch:
                atomic_torch_save({**checkpoint, "kind": "best"}, best_file)
        state = {key: checkpoint[key] for key in checkpoint if key not in ("format", "kind")}
        state["format"] = checkpoint["train_state_format"]
        return state

    def record_epoch(self, record: dict[str, Any], state: dict[str, Any], is_best: bool) -> None:
        self.history.append(record)
        self.best = state["best"]
        atomic_write_jsonl(self.file(METRICS_FILE), self.history)
        atomic_torch_save(self.checkpoint(state, "last"), self.file(LAST_CHECKPOINT))
        if is_best:
            atomic_torch_save(self.checkpoint(state, "best"), self.file(BEST_CHECKPOINT))

    def write_result(
        self,
        status: str,
        prov: dict[str, Any],
        info: DatasetInfo | None,
        **details: Any,
    ) -> dict[str, Any]:
        result = {
            "status": status,
            "epochs_completed": len(self.history),
            "best": self.best,
            "last": epoch_summary(self.history[-1]) if self.history else None,
            "epoch_time": _phase_times(self.history),
            "total_time": sum(r["epoch_time"] for r in self.history),
            "diverged": None,
            "interrupted": None,
            **details,
            "data": None if info is None else {
                "name": info.name, "source": info.source, "synthetic": info.synthetic,
                "n_train": info.n_train, "n_test": info.n_test,
            },
            "provenance": prov,
            "spec": self.spec.to_dict(),
        }
        atomic_write_json(self.file(RESULT_FILE), result)
        return result


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``."""
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


class _StopFlag:
    """Set by SIGTERM/SIGINT; the training loop polls it at batch boundaries."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def handle(self, signum: int, frame: Any) -> None:
        del frame
        self.signal = signum


@contextmanager
def _signals_to(flag: _StopFlag) -> Iterator[None]:
    """Route SIGTERM/SIGINT to ``flag`` while training (main thread only, where Python allows)."""
    signums = (signal.SIGTERM, signal.SIGINT)
    try:
        previous = {s: signal.signal(s, flag.handle) for s in signums}
    except ValueError:  # not the main thread: leave signals alone
        previous = {}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _seed_global_rngs(seed: int) -> None:
    """Seed torch, numpy and random for code that draws from the global generators.

    Bit-identical resume on CPU needs no ``torch.use_deterministic_algorithms``: the CPU kernels this
    package calls (convolution, matmul, BatchNorm, scatter without accumulation) are deterministic at
    a fixed thread count, and the flag would only cost: it imports torch._inductor at start-up and
    NaN-fills every ``torch.empty``. The resume tests of tests/test_run.py check the claim.
    """
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _epoch_line(record: dict[str, Any], epochs: int) -> str:
    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    train, test = record["train"], record["test"]
    return (
        f"epoch {record['epoch']}/{epochs} [{record['phase']}] eps={record['eps']:.6g} "
        f"lr={record['lr']:.3g} time={record['epoch_time']:.1f}s | train loss={fmt(train['loss'])} "
        f"err={fmt(train['err'])} verr={fmt(train['verified_err'])} | test err={fmt(test['err'])} "
        f"verr={fmt(test['verified_err'])}"
    )


def execute(
    spec: RunSpec,
    out_dir: str | os.PathLike[str],
    *,
    device: str | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
) -> int:
    """Run (or resume, or report) the training of ``spec`` in ``out_dir``; return the exit status.

    ``device`` overrides ``spec.device``; ``progress`` (default: stderr is a terminal) shows a
    per-epoch progress bar. Raises :class:`RunError` for runs that must not start.
    """
    run_dir = _RunDir(Path(out_dir), spec)
    torch_device = resolve_device(device or spec.device)
    config = train_config(spec)
    run_dir.claim()
    result_file = run_dir.file(RESULT_FILE)
    if result_file.exists():
        previous = read_json(result_file)
        if previous["status"] == "completed":
            log(f"{run_dir.path}: already completed; nothing to do")
            return EXIT_COMPLETED
        if previous["status"] == "diverged":
            log(f"{run_dir.path}: diverged earlier ({previous['diverged']['reason']}); "
                "delete the directory to try again")
            return EXIT_DIVERGED
    prov = provenance(spec, torch_device)
    flag = _StopFlag()
    info: DatasetInfo | None = None

    def on_epoch_end(record: dict[str, Any], state: dict[str, Any], is_best: bool) -> None:
        run_dir.record_epoch(record, state, is_best)
        log(_epoch_line(record, config.epochs))

    _seed_global_rngs(spec.seed)
    with _signals_to(flag):
        try:
            train_split, test_split, info = load_data(spec, torch_device)
            model = build_model(spec)
            initialize(model, spec.init, generator=seeded_generator(spec.seed, "init"))
            model.to(torch_device)
            start_state = run_dir.resume_state()
            if start_state is not None:
                log(f"{run_dir.path}: resuming after epoch {start_state['epoch']}")
            if flag():
                raise Interrupted(len(run_dir.history))
            train(
                model, train_split, test_split, info, config,
                generator=seeded_generator(spec.seed, "train-order"),
                objective=objective_for(config),
                on_epoch_end=on_epoch_end,
                start_state=start_state,
                should_stop=flag,
                progress=sys.stderr.isatty() if progress is None else progress,
            )
        except Diverged as error:
            run_dir.write_result("diverged", prov, info, diverged={"epoch": error.epoch, "reason": error.reason})
            log(f"{run_dir.path}: {error}")
            return EXIT_DIVERGED
        except Interrupted as error:
            signum = flag.signal or signal.SIGTERM
            name = signal.Signals(signum).name
            run_dir.write_result(
                "interrupted", prov, info,
                interrupted={"signal": name, "completed_epochs": error.completed_epochs},
            )
            log(f"{run_dir.path}: {name} received; state of epoch {error.completed_epochs} is saved, "
                "rerun the same command to resume")
            return EXIT_SIGNAL_BASE + signum
    result = run_dir.write_result("completed", prov, info)
    log(f"{run_dir.path}: completed; best {result['best']}, last {result['last']}")
    return EXIT_COMPLETED
