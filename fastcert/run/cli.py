"""The ``fastcert`` command: ``train`` one run spec into a directory, ``verify`` a checkpoint, ``status`` of a campaign.

Errors a user can fix (bad spec, wrong or unwritable directory, damaged file, unavailable method,
device or dataset) are one line on stderr naming the key, file or value, with exit status 2; spec
errors come before any work. Torch and the training code are imported inside the commands, so that
``fastcert --help`` answers at once.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fastcert.run import placement
from fastcert.run.exits import (
    EXIT_CODES_HELP,
    EXIT_USAGE,
    VERIFY_EXIT_CODES_HELP,
    RunError,
)
from fastcert.run.spec import SpecError, load, validate
from fastcert.run.verify import DEFAULT_BATCH, DEFAULT_SHARD_SIZE, VERIFIERS, parse_verifiers


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastcert", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train_cmd = commands.add_parser(
        "train",
        help="train (or resume) one run spec",
        description="Train the run described by a spec into DIR. Rerunning the same command\n"
        "resumes an interrupted run and does nothing for a completed one.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train_cmd.add_argument(
        "--spec", required=True, type=Path, metavar="RUN.yaml", help="run spec, see docs/architecture.md"
    )
    train_cmd.add_argument("--out", required=True, type=Path, metavar="DIR", help="run directory (created if missing)")
    train_cmd.add_argument("--device", help="override the spec's device (auto, cpu, cuda, cuda:N)")
    train_cmd.add_argument(
        "--wait",
        action="store_true",
        help="if another process is training DIR, wait for it to stop, then resume or report its run "
        "(default: exit with status 2 naming it)",
    )
    bar = train_cmd.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="progress bar per epoch (default: when stderr is a terminal)",
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="one plain log line per epoch only")
    train_cmd.add_argument(
        "--test-batch-size",
        type=int,
        metavar="N",
        help="examples per batch of the per-epoch test pass (default: the spec's batch_size; "
        "not part of the run's identity, the errors do not depend on it)",
    )

    verify_cmd = commands.add_parser(
        "verify",
        help="verified error of a checkpoint on its test split",
        description="Rebuild the model and test data of a checkpoint and write its standard and "
        "verified error as JSON (stdout, and FILE with --out). Several verifiers run as a cascade, "
        "cheapest first, each on the examples still uncertified; CROWN-IBP and CROWN are intersected "
        "with IBP, so they certify at least what IBP does.",
        epilog=VERIFY_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify_cmd.add_argument("--checkpoint", required=True, type=Path, metavar="CKPT")
    verify_cmd.add_argument(
        "--verifier",
        "--method",
        dest="verifiers",
        required=True,
        metavar="NAMES",
        help=f"bound methods to certify with, comma-separated, of {', '.join(VERIFIERS)} (--method: the old name)",
    )
    verify_cmd.add_argument("--eps", type=float, help="ε in pixel units (default: the spec's eps_test)")
    verify_cmd.add_argument("--out", type=Path, metavar="FILE", help="also write the JSON here (atomically)")
    verify_cmd.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto)")
    verify_cmd.add_argument(
        "--test-size",
        type=int,
        metavar="N",
        help="verify a class-balanced subset of N test examples (full CROWN is slow)",
    )
    batches = ", ".join(f"{method} {size}" for method, size in DEFAULT_BATCH.items())
    verify_cmd.add_argument("--batch-size", type=int, help=f"examples per bound pass (default: {batches})")
    verify_cmd.add_argument(
        "--shard-size",
        type=int,
        default=DEFAULT_SHARD_SIZE,
        metavar="N",
        help="with --out: verify N examples per shard and keep each shard's counts in FILE.shards/, "
        "so that a rerun resumes where a killed one stopped (default: %(default)s)",
    )
    verify_cmd.add_argument(
        "--part",
        metavar="K/N",
        help="with --out: verify only the shards numbered K modulo N (one of N cluster jobs, K from 0) "
        "and write no FILE; the same command without --part then collects every shard into FILE",
    )

    status_cmd = commands.add_parser(
        "status",
        help="where the workflow's runs stand, per table and figure (no torch; run from the repository)",
        description="Per table and figure of a scale: runs completed / training / failed / diverged / not "
        "started, the epoch and time left of each run in training, device-hours spent against results/plan.tsv.",
    )
    status_cmd.add_argument("--scale", default="paper", help="the workflow's scale (default: paper)")
    return parser


def _status(args: argparse.Namespace) -> int:
    from fastcert.pipeline.status import campaign, render

    try:
        targets = campaign(args.scale)
    except FileNotFoundError as error:
        raise RunError(str(error)) from None
    print(render(args.scale, targets), end="")
    return 0


def _train(args: argparse.Namespace, *, owns_process: bool) -> int:
    spec = load(args.spec)
    if args.device is not None:
        spec = validate({**spec.to_dict(), "device": args.device})
    if owns_process:
        placement.hide_gpus_from_cpu_job(spec.device)
    from fastcert.run.lifecycle import execute

    if args.test_batch_size is not None and args.test_batch_size < 1:
        raise RunError(f"--test-batch-size must be >= 1, got {args.test_batch_size}")
    return execute(spec, args.out, progress=args.progress, test_batch_size=args.test_batch_size, wait=args.wait)


def _verify(args: argparse.Namespace, *, owns_process: bool) -> int:
    if owns_process:
        placement.hide_gpus_from_cpu_job(args.device or "auto")
    from fastcert.io import atomic_write_json
    from fastcert.run.lifecycle import (
        build_model,
        load_checkpoint,
        load_data,
        resolve_device,
    )
    from fastcert.run.verify import ShardError, verify

    _refuse_what_a_run_did_not_leave(args.checkpoint)
    checkpoint = load_checkpoint(args.checkpoint)
    try:
        spec = validate(checkpoint["spec"])
    except SpecError as error:
        raise RunError(f"{args.checkpoint}: the checkpoint's spec is invalid ({error})") from None
    eps = spec.eps_test if args.eps is None else args.eps
    if not 0 <= eps <= 1:
        raise RunError(f"--eps must lie in [0, 1], got {eps}")
    try:
        verifiers = parse_verifiers(args.verifiers)
    except ValueError as error:
        raise RunError(f"--verifier: {error}") from None
    part = _part(args.part, args.out)
    for flag, value in (
        ("--batch-size", args.batch_size),
        ("--test-size", args.test_size),
        ("--shard-size", args.shard_size),
    ):
        if value is not None and value < 1:
            raise RunError(f"{flag} must be >= 1, got {value}")
    if args.test_size is not None:
        raw = spec.to_dict()
        spec = validate({**raw, "data": {**raw["data"], "test_size": args.test_size}})
    device = resolve_device(args.device or "auto")
    _, test_split, info = load_data(spec, device)
    model = build_model(spec)
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, TypeError, AttributeError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RunError(f"{args.checkpoint}: its weights do not fit its spec's model ({reason})") from None
    model.to(device)
    shard_dir = None if args.out is None else args.out.with_name(args.out.name + ".shards")
    shard_key = {"spec_hash": checkpoint["spec_hash"], "kind": checkpoint["kind"], "epoch": checkpoint["epoch"]}
    try:
        errors = verify(
            model,
            test_split,
            info,
            eps,
            verifiers,
            batch_size=args.batch_size,
            shard_dir=shard_dir,
            shard_size=args.shard_size,
            shard_key=shard_key,
            part=part,
        )
    except ShardError as error:
        raise RunError(str(error)) from None
    except OSError as error:
        raise RunError(f"--out {args.out}: cannot write its shards ({error.strerror or error})") from None
    result = {
        "checkpoint": str(args.checkpoint),
        "kind": checkpoint["kind"],
        "epoch": checkpoint["epoch"],
        "eps": eps,
        **errors,
        "data": {"source": info.source, "synthetic": info.synthetic},
        "spec_hash": checkpoint["spec_hash"],
    }
    if part is not None:
        result["part"] = args.part  # a part's counts only: FILE is written by the run without --part
    elif args.out is not None:
        try:
            atomic_write_json(args.out, result)
        except OSError as error:
            raise RunError(f"--out {args.out}: cannot write ({error.strerror or error})") from None
    print(json.dumps(result, indent=2))
    return 0


def _refuse_what_a_run_did_not_leave(checkpoint: Path) -> None:
    """A checkpoint missing from a run directory that has stopped: one line naming the directory and why
    (diverged, interrupted, no best checkpoint), not just "no such file"."""
    from fastcert.records import RESULT_FILE, RecordError, unverifiable

    run_dir = checkpoint.parent
    if checkpoint.exists() or not (run_dir / RESULT_FILE).is_file():
        return
    try:
        reason = unverifiable(run_dir)
    except RecordError as error:
        raise RunError(str(error)) from None
    if reason is not None:
        raise RunError(f"{run_dir}: the run {reason}; no {checkpoint.name} to verify")


def _part(text: str | None, out: Path | None) -> tuple[int, int] | None:
    """``--part K/N`` as (K, N); a one-line error for a malformed part or one without ``--out``."""
    if text is None:
        return None
    k, _, n = text.partition("/")
    if not (k.isdigit() and n.isdigit() and 0 <= int(k) < int(n)):
        raise RunError(f"--part must be K/N with 0 <= K < N, got {text!r}")
    if out is None:
        raise RunError("--part needs --out (its shards go to FILE.shards/)")
    return int(k), int(n)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastcert`` console script; returns the exit status.

    Without ``argv`` (the console script, ``python -m fastcert.run.cli``) the command owns its process:
    ``train`` or ``verify`` on the CPU hides the GPUs from it, as soon as the device is known and before
    anything has queried CUDA (:func:`fastcert.run.placement.hide_gpus_from_cpu_job` says why). A caller
    that passes ``argv`` runs the command inside its own process, whose environment it leaves alone.
    """
    args = _parser().parse_args(argv)
    if args.command == "status":  # torch-free: fastcert.run.data (its errors too) imports torch
        return _guarded(args, _status, ())
    from fastcert.run.data.integrity import DataIntegrityError, DatasetMissingError

    command = functools.partial(_train if args.command == "train" else _verify, owns_process=argv is None)
    return _guarded(args, command, (DatasetMissingError, DataIntegrityError))


def _guarded(
    args: argparse.Namespace, command: Callable[[argparse.Namespace], int], errors: tuple[type[Exception], ...]
) -> int:
    """Run ``command``; a user-fixable error is one line on stderr and exit status 2."""
    user_errors: tuple[type[Exception], ...] = (SpecError, RunError, *errors)
    try:
        return command(args)
    except user_errors as error:
        print(f"fastcert {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
