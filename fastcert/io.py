"""Atomic file writes for everything a run leaves on disk, and the strict YAML reader.

A training job can be killed at any instant (SLURM time limit, pre-emption, SIGKILL). Readers of a
run directory (the resume logic, Snakemake, the table scripts) must never see a truncated JSON file
or checkpoint, so every file is written to a temporary file in the same directory, flushed to disk,
and moved over the destination with ``os.replace`` (atomic on POSIX within one file system). A kill
leaves either the old file or the new one, plus at worst a stray ``.NAME.XXXX.tmp`` file that is
never read; :func:`remove_temp_files` deletes those of a directory's own files when a run resumes.

YAML (run specs, the workflow's config files) is read by :func:`load_yaml`, which refuses duplicate
keys: PyYAML keeps the last value silently, so a copy-pasted key would change an experiment unseen.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import yaml

TMP_SUFFIX = ".tmp"


def _temp_prefix(name: str) -> str:
    """Start of the temporary file names :func:`atomic_write` uses for a target named ``name``."""
    return f".{name}."


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
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(target.name), suffix=TMP_SUFFIX, dir=target.parent)
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


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` atomically."""

    def write(handle: IO[bytes]) -> None:
        handle.write(data)

    atomic_write(path, write)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically; NaN/inf are refused (they are not JSON)."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike[str], records: Iterable[Any]) -> None:
    """Write one compact JSON object per line, atomically (the whole file is rewritten)."""
    lines = [json.dumps(record, allow_nan=False) + "\n" for record in records]
    atomic_write_text(path, "".join(lines))


def remove_temp_files(directory: str | os.PathLike[str], names: Iterable[str]) -> list[Path]:
    """Delete the temporary files that killed :func:`atomic_write` calls left for the files ``names``
    of ``directory`` (each may be checkpoint-sized); only call it while no write to them can be under
    way. Returns what was deleted."""
    removed = []
    for name in names:
        for stray in Path(directory).glob(f"{_temp_prefix(name)}*{TMP_SUFFIX}"):
            if stray.is_file():
                stray.unlink(missing_ok=True)
                removed.append(stray)
    return removed


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a UTF-8 JSON file; text that is not JSON is a ValueError naming the file (a missing or
    unreadable file is the OSError of reading it)."""
    try:
        return json.loads(Path(path).read_bytes().decode("utf-8"))
    except ValueError as error:  # json.JSONDecodeError or UnicodeDecodeError
        raise ValueError(f"{path}: invalid JSON ({error})") from error


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` atomically (torch imported here: the rest of this module serves torch-free
    callers such as the workflow's manifest script)."""
    import torch

    atomic_write(path, lambda handle: torch.save(obj, handle))


class DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping that names one key twice (a :class:`yaml.YAMLError`, so handlers of YAML
    errors report it with the file)."""


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key: SafeLoader's own error names it
                break
            line = key_node.start_mark.line + 1
            if seen is not None:
                raise DuplicateKeyError(f"duplicate key {key!r} at line {line} (first at line {seen})")
            first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str | IO[str]) -> Any:
    """Parse one YAML document like ``yaml.safe_load``, but refuse duplicate keys
    (:class:`DuplicateKeyError`, naming the key and both lines)."""
    return yaml.load(text, Loader=_StrictLoader)
