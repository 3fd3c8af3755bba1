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

Damaged files (truncated, garbage, from a disk or a hand edit, not from our own writes) are found
before anything is written, and resume then either recovers safely or stops with exit status 2 and
one line naming the file and what to do, leaving the directory as it was:

* ``checkpoint_last.pt`` unreadable, or with weights that do not fit the spec's model: stop; delete
  it to retrain from the start, or copy ``checkpoint_best.pt`` over it to resume from the best epoch
  (a best checkpoint is the complete training state of its epoch, so the resumed run is the
  uninterrupted one; tests/test_faults.py).
* ``checkpoint_best.pt`` unreadable or of another epoch: rewritten from the last checkpoint when
  the best epoch is the last one; otherwise stop (that epoch's weights are lost).
* ``metrics.jsonl``: a torn last line (no newline, not JSON) is dropped with a warning; if the
  last checkpoint needs its epoch, or any other line is damaged, stop.
* ``spec.json`` unreadable: stop (it is what binds the directory to its spec).
* ``result.json`` unreadable: ignored with a warning (it only summarizes, and is rewritten when
  this run stops).

One process writes a run directory at a time: ``fastcert train`` holds an exclusive lock on its
``run.lock`` (:mod:`fastcert.locks`, released by the kernel when the process dies, so a killed run
never blocks the next) from before it reads what the directory holds until it stops. A second
``fastcert train`` on the directory stops with exit status 2 naming the holder, or waits for it with
``--wait`` and then resumes (or reports) what the first one left. The holder's line in ``run.lock``
gets a heartbeat once per epoch, for file systems that do not honour ``flock`` across hosts.

The directory is bound to its spec (``spec.json``) only once the data has loaded; a run that stops
before leaves the directory as it found it: no lock file, no folders created for it. Temporary files of killed writes
(``.NAME.XXXX.tmp``, :func:`fastcert.io.remove_temp_files`) are deleted when a run starts on it.

The data subset (``data.train_size``/``test_size``) and synthetic data use data seed 0 for every
run, so that repeats with different ``seed`` differ only in training randomness (init, order,
augmentation).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import random
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

import fastcert
from fastcert.datasets import DatasetInfo
from fastcert.io import (
    atomic_torch_save,
    atomic_write_json,
    atomic_write_jsonl,
    read_json,
    remove_temp_files,
)
from fastcert.locks import FileLock, Holder, LockBusy
from fastcert.method.init import initialize
from fastcert.method.models import build
from fastcert.method.precision import record as precision_record
from fastcert.records import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    METRICS_FILE,
    RESULT_FILE,
    RUN_FILES,
    RUN_LOCK_FILE,
    SPEC_FILE,
    DivergedDetail,
    EpochSummary,
    GpuDetail,
    InterruptedDetail,
    MetricsRecord,
    Phase,
    Provenance,
    RecordError,
    Result,
    Status,
    epoch_summary,
    read_metrics,
    read_result,
)
from fastcert.run import placement
from fastcert.run.data.loading import load_dataset
from fastcert.run.data.splits import Split, seeded_generator
from fastcert.run.exits import (
    EXIT_CODES_HELP,
    EXIT_COMPLETED,
    EXIT_DIVERGED,
    EXIT_ERROR,
    EXIT_SIGNAL_BASE,
    EXIT_USAGE,
    RunError,
)
from fastcert.run.footprint import fit_error, host_memory_bytes, slot_need
from fastcert.run.spec import RunSpec
from fastcert.run.training import Diverged, Interrupted, TrainConfig, train

CHECKPOINT_FORMAT = "fastcert-checkpoint-1"
CHECKPOINT_KEYS = ("format", "train_state_format", "kind", "epoch", "best", "model", "spec", "spec_hash")
__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_COMPLETED",
    "EXIT_DIVERGED",
    "EXIT_ERROR",
    "EXIT_SIGNAL_BASE",
    "EXIT_USAGE",
    "RunError",
    "build_model",
    "execute",
    "load_checkpoint",
    "load_data",
    "resolve_device",
]


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


def _check_fits(spec: RunSpec, device: torch.device) -> None:
    """Refuse, before anything is allocated, a spec whose training cannot fit in the device's memory
    (all of it: a GPU busy with other work is not a reason to refuse)."""
    available = torch.cuda.mem_get_info(device)[1] if device.type == "cuda" else host_memory_bytes()
    problem = fit_error(spec, available, str(device))
    if problem is not None:
        raise RunError(problem)


def place_on_gpu(
    spec: RunSpec, device: torch.device, note: str, log: Callable[[str], None]
) -> placement.Placement | None:
    """Slots of one GPU for a local job that asked for ``auto``/``cuda`` (not ``cuda:N``): waits for
    them and makes that GPU the current one. None where a scheduler placed the job or on the CPU."""
    if device.type != "cuda" or device.index is not None or placement.scheduled():
        return None
    gpus = torch.cuda.device_count()
    slots = placement.slots_per_gpu()
    memory = placement.gpu_memory_gb()
    if memory is None:
        memory = min(torch.cuda.get_device_properties(i).total_memory for i in range(gpus)) / 2**30
    need = slot_need(spec, memory, slots)
    held = placement.place(gpus, need, slots, directory=placement.slots_dir(), note=note, log=log)
    torch.cuda.set_device(held.gpu)
    log(f"{note}: on GPU {held.gpu}, {need} of its {slots} slot(s)")
    return held


def build_model(spec: RunSpec) -> torch.nn.Module:
    """The spec's architecture with its constructor init (draws from the global torch RNG)."""
    return build(
        spec.model,
        spec.dataset,
        bn=spec.bn,
        width=spec.width,
        bn_centralize=spec.bn_centralize,
        bn_unitize=spec.bn_unitize,
    )


def load_data(spec: RunSpec, device: torch.device) -> tuple[Split, Split, DatasetInfo]:
    """Train/test splits and info of a spec, on ``device`` (data seed 0, see the module doc)."""
    return load_dataset(
        spec.dataset,
        root=spec.data.root,
        source=spec.data.source,
        train_size=spec.data.train_size,
        test_size=spec.data.test_size,
        device=device,
    )


class DamagedFileError(RunError):
    """A file of a run directory that cannot be read as what it should be."""


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A fastcert checkpoint (tensors on CPU; only plain data, so safe to load).

    Raises :class:`RunError` for a missing file and :class:`DamagedFileError` for anything that is
    not a complete fastcert checkpoint (truncated, empty, random bytes, another program's file)."""
    file = Path(path)
    if not file.is_file():
        raise RunError(f"{file}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # a damaged file may make torch warn: the error below says it all
            warnings.simplefilter("ignore")
            checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:
        # RuntimeError, EOFError, UnpicklingError, ValueError, zipfile errors...)
        text = str(error).strip()
        reason = text.splitlines()[0].split(". ")[0][:160] if text else ""
        raise DamagedFileError(
            f"{file}: not a readable checkpoint ({type(error).__name__}{': ' + reason if reason else ''})"
        ) from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise DamagedFileError(f"{file}: not a fastcert checkpoint")
    missing = [key for key in CHECKPOINT_KEYS if key not in checkpoint]
    if missing:
        raise DamagedFileError(f"{file}: incomplete fastcert checkpoint (no {', '.join(missing)})")
    return checkpoint


def _git_commit() -> str | None:
    source = Path(fastcert.__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def provenance(spec: RunSpec, device: torch.device) -> Provenance:
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
        "gpu": None,
    }


def _phase_times(history: list[MetricsRecord]) -> dict[str, float | None]:
    times: dict[str, list[float]] = {phase: [] for phase in Phase}
    for record in history:
        times[record["phase"]].append(record["epoch_time"])
    return {phase: (sum(values) / len(values) if values else None) for phase, values in times.items()}


def _warn(message: str) -> None:
    print(f"fastcert: warning: {message}", file=sys.stderr, flush=True)


def _missing_dirs(path: Path) -> list[Path]:
    """``path`` and its ancestors that do not exist yet, outermost first."""
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing[::-1]


def _remove_dirs(created: list[Path]) -> None:
    """Remove the folders :func:`_missing_dirs` listed, innermost first, where they are still empty."""
    for directory in reversed(created):
        with suppress(OSError):
            directory.rmdir()


def _who(holder: Holder | None) -> str:
    return "another process" if holder is None else holder.describe()


@dataclass
class _Resume:
    """What a run directory holds, read and checked before anything is written."""

    checkpoint: dict[str, Any] | None
    history: list[MetricsRecord]
    restore_best: bool


@dataclass
class _RunDir:
    """The files of one run directory and what has been recorded in it so far."""

    path: Path
    spec: RunSpec
    history: list[MetricsRecord] = field(default_factory=list)
    best: EpochSummary | None = None
    lock: FileLock | None = None  # held while this process writes the directory (writer())

    def file(self, name: str) -> Path:
        return self.path / name

    def check(self) -> None:
        """Refuse, before any work, a path that cannot be a run directory or that holds another
        spec's run (reads only)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunError(f"{self.path}: exists and is not a directory; use another --out")
        missing = _missing_dirs(self.path)
        existing = missing[0].parent if missing else self.path
        if not existing.is_dir():
            raise RunError(f"{self.path}: {existing} is not a directory; use another --out")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise RunError(f"{self.path}: cannot write in {existing} (permission denied); use another --out")
        spec_file = self.file(SPEC_FILE)
        if spec_file.exists():
            recorded = _read_json_object(
                spec_file, f"it binds the directory to one spec: restore it, or delete {self.path} to start over"
            ).get("spec_hash")
            if recorded != self.spec.hash():
                raise RunError(
                    f"{self.path} holds a run of another spec (hash {recorded} ≠ {self.spec.hash()}); "
                    "use another --out directory or delete this one"
                )

    @contextmanager
    def writer(self, *, wait: bool, log: Callable[[str], None]) -> Iterator[None]:
        """Create the directory and hold its lock while the body runs; raise :class:`RunError` naming
        the holder if another process holds it (or, with ``wait``, wait for it). A directory the body
        leaves unbound to a spec loses the lock file and the folders created for it."""
        created = _missing_dirs(self.path)
        lock = FileLock(self.file(RUN_LOCK_FILE))
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock.acquire(wait=wait, on_wait=lambda holder: log(f"{self.path}: waiting for {_who(holder)} to stop"))
        except LockBusy as busy:
            raise RunError(
                f"{self.path}: another process is training this run directory ({_who(busy.holder)}); "
                "wait for it to stop, or rerun with --wait"
            ) from None
        except OSError as error:
            _remove_dirs(created)
            raise RunError(f"{self.path}: cannot write the run directory ({error.strerror or error})") from None
        self.lock = lock
        try:
            yield
        finally:
            self.lock = None
            if self.file(SPEC_FILE).exists():
                lock.release()
            else:
                lock.remove()
                _remove_dirs(created)

    def previous_result(self, *, warn: bool = True) -> Result | None:
        """``result.json`` of an earlier attempt; an unreadable one is ignored (it is rewritten when the
        run stops), with a warning if ``warn``."""
        result_file = self.file(RESULT_FILE)
        if not result_file.exists():
            return None
        try:
            return read_result(result_file)
        except OSError as error:
            problem = f"{result_file}: damaged ({type(error).__name__}: {error})"
        except RecordError as error:
            problem = str(error)
        if warn:
            _warn(f"{problem}; ignored (it is rewritten when this run stops)")
        return None

    def read_resume(self) -> _Resume:
        """The last checkpoint, the metrics it needs and the state of the best file, checked for
        damage before anything is written (see the module doc for what is recovered)."""
        last = self.file(LAST_CHECKPOINT)
        if not last.exists():
            return _Resume(None, [], restore_best=False)
        try:
            checkpoint = load_checkpoint(last)
        except DamagedFileError as error:
            raise DamagedFileError(f"{error}; {self._last_advice()}") from None
        if checkpoint["spec_hash"] != self.spec.hash():
            raise RunError(f"{last} was written for another spec; delete {self.path} to start over")
        problem = self._weights_problem(checkpoint)
        if problem is not None:
            advice = self._last_advice()
            raise DamagedFileError(f"{last}: weights that do not fit the spec's model ({problem}); {advice}")
        epoch = checkpoint["epoch"]
        metrics = self.file(METRICS_FILE)
        torn: list[str] = []  # warned about only if the run goes on (else the error is the one line)
        try:
            records = read_metrics(metrics, on_torn_line=torn.append)
        except RecordError as error:
            raise DamagedFileError(f"{error}; restore the file, or delete {self.path} to retrain") from None
        history = [r for r in records if r["epoch"] <= epoch]
        if [r["epoch"] for r in history] != list(range(1, epoch + 1)):
            raise DamagedFileError(
                f"{metrics} lacks records of epochs 1-{epoch} that {last} has trained; restore it, or delete "
                f"{self.path} to retrain"
            )
        best = checkpoint["best"]
        restore_best = False
        if best is not None:
            best_file = self.file(BEST_CHECKPOINT)
            try:
                best_epoch = load_checkpoint(best_file)["epoch"] if best_file.exists() else None
                problem = f"holds epoch {best_epoch}, not the best epoch {best['epoch']}"
            except DamagedFileError as error:
                best_epoch, problem = None, str(error).removeprefix(f"{best_file}: ")
            if best_epoch != best["epoch"]:
                if best["epoch"] != epoch:
                    raise DamagedFileError(
                        f"{best_file}: {problem if best_file.exists() else 'missing'}, and {last} is of epoch "
                        f"{epoch}: the best epoch's weights are lost; delete {self.path} to retrain"
                    )
                restore_best = True
        for warning in torn:
            _warn(warning)
        return _Resume(checkpoint, history, restore_best)

    def _weights_problem(self, checkpoint: dict[str, Any]) -> str | None:
        """Why the checkpoint's weights would not load into the spec's model (a damaged key or shape,
        found before anything is written), or None. The model is built aside the run's random stream."""
        with torch.random.fork_rng(devices=[]):
            model = build_model(self.spec)
        try:
            model.load_state_dict(checkpoint["model"])
        except (RuntimeError, TypeError, AttributeError, KeyError) as error:
            lines = str(error).strip().splitlines()
            return " ".join(lines[1:2] or lines[:1]).strip() or type(error).__name__
        return None

    def _last_advice(self) -> str:
        best_file = self.file(BEST_CHECKPOINT)
        try:
            best = load_checkpoint(best_file) if best_file.exists() else None
        except DamagedFileError:
            best = None
        if best is not None and best["spec_hash"] == self.spec.hash():
            return (
                f"copy {best_file.name} (epoch {best['epoch']}) over it to resume from that epoch, "
                "or delete it to retrain from the start"
            )
        return "delete it to retrain from the start"

    def start(self) -> dict[str, Any] | None:
        """Check what the (locked) directory holds, then bind it, clean stray temporary files and
        make metrics and best file consistent with the last checkpoint; the training state to
        resume from (None: start afresh)."""
        resume = self.read_resume()
        try:
            spec_file = self.file(SPEC_FILE)
            if not spec_file.exists():
                atomic_write_json(spec_file, {"spec_hash": self.spec.hash(), "spec": self.spec.to_dict()})
        except OSError as error:
            raise RunError(f"{self.path}: cannot write the run directory ({error.strerror or error})") from None
        for stray in remove_temp_files(self.path, RUN_FILES):
            _warn(f"deleted {stray}, left by a write that was killed")
        self.history = resume.history
        atomic_write_jsonl(self.file(METRICS_FILE), self.history)
        checkpoint = resume.checkpoint
        if checkpoint is None:
            return None
        self.best = checkpoint["best"]
        if resume.restore_best:
            atomic_torch_save({**checkpoint, "kind": "best"}, self.file(BEST_CHECKPOINT))
        state = {key: checkpoint[key] for key in checkpoint if key not in ("format", "kind")}
        state["format"] = checkpoint["train_state_format"]
        return state

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

    def record_epoch(self, record: MetricsRecord, state: dict[str, Any], is_best: bool) -> None:
        self.history.append(record)
        self.best = state["best"]
        atomic_write_jsonl(self.file(METRICS_FILE), self.history)
        atomic_torch_save(self.checkpoint(state, "last"), self.file(LAST_CHECKPOINT))
        if is_best:
            atomic_torch_save(self.checkpoint(state, "best"), self.file(BEST_CHECKPOINT))
        if self.lock is not None:
            self.lock.heartbeat()

    def write_result(
        self,
        status: Status,
        prov: Provenance,
        info: DatasetInfo | None,
        *,
        diverged: DivergedDetail | None = None,
        interrupted: InterruptedDetail | None = None,
    ) -> Result:
        result: Result = {
            "status": status,
            "epochs_completed": len(self.history),
            "best": self.best,
            "last": epoch_summary(self.history[-1]) if self.history else None,
            "epoch_time": _phase_times(self.history),
            "total_time": sum(r["epoch_time"] for r in self.history),
            "diverged": diverged,
            "interrupted": interrupted,
            "data": None
            if info is None
            else {
                "name": info.name,
                "source": info.source,
                "synthetic": info.synthetic,
                "n_train": info.n_train,
                "n_test": info.n_test,
            },
            "precision": precision_record(self.spec.tf32),
            "provenance": prov,
            "spec": self.spec.to_dict(),
        }
        atomic_write_json(self.file(RESULT_FILE), result)
        return result


def _read_json_object(path: Path, advice: str) -> dict[str, Any]:
    """A JSON object from ``path``; :class:`DamagedFileError` (with ``advice``) if it is not one."""
    try:
        value = read_json(path)
    except OSError as error:
        problem = f"{path}: damaged ({type(error).__name__}: {error})"
    except ValueError as error:  # names the file
        problem = f"{error}"
    else:
        if isinstance(value, dict):
            return value
        problem = f"{path}: damaged (a JSON {type(value).__name__}, not an object)"
    raise DamagedFileError(f"{problem}; {advice}")


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


def _epoch_line(record: MetricsRecord, epochs: int) -> str:
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
    test_batch_size: int | None = None,
    wait: bool = False,
    log: Callable[[str], None] = lambda line: print(line, flush=True),
) -> int:
    """Run (or resume, or report) the training of ``spec`` in ``out_dir``; return the exit status.

    ``device`` overrides ``spec.device``; ``progress`` (default: stderr is a terminal) shows a
    per-epoch progress bar; ``test_batch_size`` sets the per-epoch test pass's batch (default:
    :func:`fastcert.run.footprint.per_epoch_test_batch`: the spec's batch_size, unless that would make the
    test pass set the run's peak memory); ``wait``: wait for another process training ``out_dir`` to stop instead of
    refusing. Raises :class:`RunError` for runs that must not start.
    """
    run_dir = _RunDir(Path(out_dir), spec)
    torch_device = resolve_device(device or spec.device)
    config = TrainConfig.from_spec(spec)
    if test_batch_size is not None:
        config = dataclasses.replace(config, test_batch_size=test_batch_size)
    _check_fits(spec, torch_device)
    run_dir.check()  # before the lock: nothing is created for a run that cannot start
    finished = _finished(run_dir, log, warn=False)  # a finished run is reported without writing, not even the lock
    if finished is not None:
        return finished
    with run_dir.writer(wait=wait, log=log):
        return _run(run_dir, torch_device, config, progress, log)


def _finished(run_dir: _RunDir, log: Callable[[str], None], *, warn: bool = True) -> int | None:
    """The exit status of a run that has ended for good (completed, or diverged), said in one line; None
    for a run to start or resume (``warn``: say so if its result.json is damaged)."""
    previous = run_dir.previous_result(warn=warn)
    if previous is None:
        return None
    if previous["status"] == Status.COMPLETED:
        log(f"{run_dir.path}: already completed; nothing to do")
        return EXIT_COMPLETED
    if previous["status"] == Status.DIVERGED:
        detail = previous.get("diverged")
        reason = detail.get("reason") if detail else None
        log(f"{run_dir.path}: diverged earlier ({reason}); delete the directory to try again")
        return EXIT_DIVERGED
    return None


def _run(
    run_dir: _RunDir, torch_device: torch.device, config: TrainConfig, progress: bool | None, log: Callable[[str], None]
) -> int:
    """:func:`execute` under the directory's lock; checks again what another writer may have changed
    (it may have finished the run while this one waited)."""
    spec = run_dir.spec
    run_dir.check()
    finished = _finished(run_dir, log)
    if finished is not None:
        return finished
    held = place_on_gpu(spec, torch_device, f"training {run_dir.path}", log)
    if held is None:
        return _train_in(spec, run_dir, torch_device, config, None, progress, log)
    try:
        return _train_in(spec, run_dir, torch.device("cuda", held.gpu), config, held, progress, log)
    finally:
        held.release()


def _train_in(
    spec: RunSpec,
    run_dir: _RunDir,
    torch_device: torch.device,
    config: TrainConfig,
    held: placement.Placement | None,
    progress: bool | None,
    log: Callable[[str], None],
) -> int:
    """Train (or resume) on ``torch_device``, holding the GPU slots ``held``; return the exit status."""
    prov = provenance(spec, torch_device)
    if held is not None:
        sharing = held.runs_on_gpu()
        prov["gpu"] = GpuDetail(
            index=held.gpu, slots=len(held.locks), slots_per_gpu=held.slots_per_gpu, runs_sharing=sharing
        )
    flag = _StopFlag()
    info: DatasetInfo | None = None

    def on_epoch_end(record: dict[str, Any], state: dict[str, Any], is_best: bool) -> None:
        if held is not None and prov["gpu"] is not None:
            prov["gpu"]["runs_sharing"] = max(prov["gpu"]["runs_sharing"], held.runs_on_gpu())
        metrics = cast(MetricsRecord, record)  # training's records have MetricsRecord's keys
        run_dir.record_epoch(metrics, state, is_best)
        log(_epoch_line(metrics, config.epochs))

    _seed_global_rngs(spec.seed)
    with _signals_to(flag):
        try:
            train_split, test_split, info = load_data(spec, torch_device)
            start_state = run_dir.start()
            model = build_model(spec)
            assert spec.init is not None, "validate() resolves init from the method"
            initialize(model, spec.init, generator=seeded_generator(spec.seed, "init"))
            model.to(torch_device)
            if start_state is not None:
                log(f"{run_dir.path}: resuming after epoch {start_state['epoch']}")
            if flag():
                raise Interrupted(len(run_dir.history))
            train(
                model,
                train_split,
                test_split,
                info,
                config,
                generator=seeded_generator(spec.seed, "train-order"),
                on_epoch_end=on_epoch_end,
                start_state=start_state,
                should_stop=flag,
                progress=sys.stderr.isatty() if progress is None else progress,
            )
        except Diverged as error:
            run_dir.write_result(Status.DIVERGED, prov, info, diverged={"epoch": error.epoch, "reason": error.reason})
            log(f"{run_dir.path}: {error}")
            return EXIT_DIVERGED
        except Interrupted as error:
            signum = flag.signal or signal.SIGTERM
            name = signal.Signals(signum).name
            run_dir.write_result(
                Status.INTERRUPTED,
                prov,
                info,
                interrupted={"signal": name, "completed_epochs": error.completed_epochs},
            )
            log(
                f"{run_dir.path}: {name} received; state of epoch {error.completed_epochs} is saved, "
                "rerun the same command to resume"
            )
            return EXIT_SIGNAL_BASE + signum
    result = run_dir.write_result(Status.COMPLETED, prov, info)
    log(f"{run_dir.path}: completed; best {result['best']}, last {result['last']}")
    return EXIT_COMPLETED
