"""The strict YAML reader, the JSON reader and the clean-up of stray temporary files (fastcert.io)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fastcert.io import (
    DuplicateKeyError,
    atomic_write_text,
    load_yaml,
    read_json,
    remove_temp_files,
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' at line 3 (first at line 1)"),
        ("top:\n  x: 1\n  y: [1, {z: 1, z: 2}]\n", "duplicate key 'z' at line 3 (first at line 3)"),
        ("- {k: 1}\n- k: 1\n  j: 2\n  k: 3\n", "duplicate key 'k' at line 4 (first at line 2)"),
    ],
)
def test_duplicate_keys_are_refused_with_the_key_and_both_lines(text: str, message: str) -> None:
    with pytest.raises(DuplicateKeyError) as error:
        load_yaml(text)
    assert str(error.value) == message
    assert isinstance(error.value, yaml.YAMLError)  # so every YAML error handler reports it


def test_everything_else_loads_as_safe_load_does() -> None:
    text = "base: &base {a: 1, b: [1, 2]}\nother: *base\nmerged:\n  <<: *base\n  a: 2\nnum: 5e-4\nnone:\n"
    assert load_yaml(text) == yaml.safe_load(text)
    assert load_yaml(text)["merged"] == {"a": 2, "b": [1, 2]}  # a merge key may be overridden
    assert load_yaml("") is None
    with pytest.raises(yaml.YAMLError):
        load_yaml("!!python/object:os.system {}\n")  # still safe


@pytest.mark.parametrize("content", [b'{"a": [1, 2', b'{"a": "\xff"}'])
def test_a_file_that_is_not_utf8_json_is_a_one_line_error_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "result.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"^.*result\.json: invalid JSON \(") as error:
        read_json(path)
    assert str(error.value).startswith(str(path)) and "\n" not in str(error.value)
    path.write_text('{"a": [1, 2.5, null], "é": "x"}', encoding="utf-8")
    assert read_json(path) == {"a": [1, 2.5, None], "é": "x"}


def test_remove_temp_files_deletes_only_the_named_files_temporaries(tmp_path: Path) -> None:
    ours = [tmp_path / ".checkpoint_last.pt.abc123.tmp", tmp_path / ".metrics.jsonl.x.tmp"]
    foreign = [tmp_path / ".other.pt.abc.tmp", tmp_path / "checkpoint_last.pt.tmp", tmp_path / "notes.tmp"]
    for path in ours + foreign:
        path.write_text("partial")
    atomic_write_text(tmp_path / "checkpoint_last.pt", "kept")
    removed = remove_temp_files(tmp_path, ["checkpoint_last.pt", "metrics.jsonl"])
    assert sorted(removed) == sorted(ours)
    assert all(p.exists() for p in foreign) and not any(p.exists() for p in ours)
    assert (tmp_path / "checkpoint_last.pt").read_text() == "kept"
