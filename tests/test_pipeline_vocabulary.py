"""The workflow's schemas list datasets where the package's catalog does: the two must agree."""

from __future__ import annotations

from pathlib import Path

import yaml

from fastcert.datasets import DATASETS

SCHEMAS = Path(__file__).resolve().parents[1] / "workflow" / "schemas"


def test_per_dataset_schema_keys_are_the_catalogs_datasets() -> None:
    config = yaml.safe_load((SCHEMAS / "config.schema.yaml").read_text())
    scales = yaml.safe_load((SCHEMAS / "scales.schema.yaml").read_text())
    mem_mb = config["properties"]["train"]["properties"]["mem_mb"]
    assert set(mem_mb["properties"]) - {"base"} == set(DATASETS)
    assert set(mem_mb["required"]) - {"base"} == set(DATASETS)
    assert set(scales["$defs"]["scale"]["properties"]["datasets"]["properties"]) == set(DATASETS)


def test_no_schema_hard_codes_models_methods_or_scale_names() -> None:
    """Those are checked by fastcert.run.spec (vocabulary) and by the scales file's own keys."""
    text = "".join(path.read_text() for path in SCHEMAS.glob("*.yaml"))
    for name in ("cnn7", "wide_resnet", "resnext", "crown-ibp", "vanilla", "enum: [paper"):
        assert name not in text
