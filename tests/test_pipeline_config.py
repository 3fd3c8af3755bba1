"""Schema checks of fastcert.pipeline.config: defaults filled, one line per problem, nearest names."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fastcert.pipeline.config import check, choose_scale, load_checked, load_schema, read_yaml
from fastcert.pipeline.errors import ExperimentError
from fastcert.records import CHECKPOINTS, DEFAULT_CHECKPOINT

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "workflow" / "schemas"
CONFIG_SCHEMA = load_schema(SCHEMAS / "config.schema.yaml")


def config(**overrides: object) -> dict:
    data = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    data.update(overrides)
    return data


def test_defaults_are_filled_in_nested_sections() -> None:
    data = config(tables={})
    del data["train"]["gpu"]
    check(data, CONFIG_SCHEMA, "config")
    assert data["tables"] == {"checkpoint": DEFAULT_CHECKPOINT} and data["train"]["gpu"] == 1


def test_the_schema_offers_the_checkpoints_a_run_keeps() -> None:
    checkpoint = CONFIG_SCHEMA["properties"]["tables"]["properties"]["checkpoint"]
    assert tuple(checkpoint["enum"]) == CHECKPOINTS and checkpoint["default"] == DEFAULT_CHECKPOINT
    data = config()
    data.pop("tables", None)
    check(data, CONFIG_SCHEMA, "config")
    assert data["tables"]["checkpoint"] == DEFAULT_CHECKPOINT  # filled when config.yaml does not set it


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        ({"scal": "smoke"}, "config: top level: unknown key 'scal' (did you mean 'scale'?)"),
        ({"tables": {"checkpoint": "bst"}}, "config: tables.checkpoint: 'bst' is not allowed (did you mean 'best'?)"),
        ({"tables": {"chekpoint": "best"}}, "config: tables: unknown key 'chekpoint' (did you mean 'checkpoint'?)"),
        ({"zzz": 1}, "config: top level: unknown key 'zzz' (valid: scale, experiments, scales"),
        ({"train": {"gpu": -1}}, "config: train.gpu: -1 is less than the minimum of 0"),
    ],
)
def test_each_problem_is_one_line_naming_the_key(overrides: dict, line: str) -> None:
    data = config()
    for key, value in overrides.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    with pytest.raises(ExperimentError) as error:
        check(data, CONFIG_SCHEMA, "config")
    assert line in str(error.value)
    assert len(str(error.value).splitlines()) <= 2


def test_a_misspelled_key_in_a_nested_list_names_its_path(tmp_path: Path) -> None:
    experiments = yaml.safe_load((REPO / "config" / "experiments.yaml").read_text())
    group = experiments["targets"]["table2"]["groups"][0]
    group["repeatz"] = group.pop("repeats")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(experiments))
    with pytest.raises(
        ExperimentError,
        match=r"bad.yaml: targets.table2.groups\[0\]: unknown key 'repeatz' "
        r"\(did you mean 'repeats'\?\)",
    ):
        load_checked(str(path), SCHEMAS / "experiments.schema.yaml")


def test_scale_names_come_from_the_scales_file() -> None:
    scales = load_checked(str(REPO / "config" / "scales.yaml"), SCHEMAS / "scales.schema.yaml")
    assert choose_scale(scales, "smoke", "scales.yaml")["max_repeats"] == 1
    assert scales["paper"]["width"] == 1.0 and scales["paper"]["max_repeats"] is None  # defaults filled
    with pytest.raises(ExperimentError, match=r"unknown scale 'smok' \(did you mean 'smoke'\?\)"):
        choose_scale(scales, "smok", "scales.yaml")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"a:\n  b: 0.1\n  b: 0.01\n", r"x.yaml: not valid YAML: duplicate key 'b' at line 3 \(first at line 2\)"),
        (b"scale: \xff\xfe\n", r"x.yaml: not UTF-8 text"),
        (b"scale: [paper\n", r"x.yaml: not valid YAML: "),
    ],
)
def test_every_workflow_yaml_is_read_strictly_with_errors_naming_the_file(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "x.yaml"
    path.write_bytes(content)
    with pytest.raises(ExperimentError, match=message):
        read_yaml(path)
    with pytest.raises(ExperimentError, match=message):  # the checked files are read the same way
        load_checked(str(path), SCHEMAS / "scales.schema.yaml")
    with pytest.raises(ExperimentError, match=r"missing.yaml: cannot read \(No such file or directory\)"):
        read_yaml(tmp_path / "missing.yaml")
