"""Atomic file writes for everything a run leaves on disk.

A training job can be killed at any instant (SLURM time limit, pre-emption, SIGKILL). Readers of a
run directory (the resume logic, Snakemake, the table scripts) must never see a truncated JSON file
or checkpoint, so every file is written to a temporary file in the same directory, flushed to disk,
and moved over the destination with ``os.replace`` (atomic on POSIX within one file system). A kill
leaves either the old file or the new one, plus at worst a stray ``.tmp`` file that is never read.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (the directory entry), where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(file)`` on a temporary file and move it over ``path`` only if it succeeded."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
    try:
        os.fchmod(fd, default_mode())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def default_mode(directory: bool = False) -> int:
    """The mode ``open()`` (``os.mkdir``) gives a new file (directory): 0666 (0777) less the umask.

    ``tempfile`` creates 0600 files and 0700 directories; moved into place as they are, results
    and datasets would be unreadable to the collaborators a shared cluster directory is for."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically; NaN/inf are refused (they are not JSON)."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike[str], records: Iterable[Any]) -> None:
    """Write one compact JSON object per line, atomically (the whole file is rewritten)."""
    lines = [json.dumps(record, allow_nan=False) + "\n" for record in records]
    atomic_write_text(path, "".join(lines))


def read_jsonl(path: str | os.PathLike[str]) -> list[Any]:
    """Read a JSON-lines file; a missing file is an empty list."""
    target = Path(path)
    if not target.exists():
        return []
    with target.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` atomically (torch imported here: the rest of this module serves torch-free
    callers such as the workflow's manifest script)."""
    import torch

    atomic_write(path, lambda handle: torch.save(obj, handle))
