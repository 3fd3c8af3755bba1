"""Property test of the spec loader: whatever a spec file holds, ``load`` returns a spec that
validates again, or raises SpecError naming the file and the key (never another exception)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fastcert.run.spec import (
    _DATA_FIELDS,
    _SCHEDULE_FIELDS,
    _TOP_FIELDS,
    SpecError,
    load,
    validate,
)

VALID = {
    "dataset": "mnist",
    "data": {"source": "synthetic", "train_size": 96, "test_size": 48},
    "model": "cnn7",
    "width": 0.0625,
    "method": "ours",
    "schedule": {"start": 1, "length": 3, "epochs": 6, "milestones": [5]},
    "eps_train": 0.05,
    "eps_test": 0.05,
    "batch_size": 16,
    "grad_accumulation": 2,
    "lr": 0.0005,
    "lambda0": 0.5,
    "tau": 0.5,
    "grad_clip": 10.0,
    "bn": "full",
    "init": "ibp",
    "regularizers": ["tightness", "relu"],
    "seed": 7,
    "device": "cpu",
}
KEY_PATHS = (
    ["spec"] + list(_TOP_FIELDS) + [f"data.{k}" for k in _DATA_FIELDS] + [f"schedule.{k}" for k in _SCHEDULE_FIELDS]
)
NAMES_A_KEY = re.compile(rf"({'|'.join(re.escape(k) for k in KEY_PATHS)})(\[\d+\])?: ")
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

extremes = st.sampled_from([10**400, -(10**400), 2**64, 1e308, 5e-324, -0.0, 0, 1, 2, 10**11])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    extremes,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["auto", "cpu", "cuda:0", "mnist", "cifar10", "resnext", "ours", "relu", "5e-4", "1e999", "-"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(KEY_PATHS), inner, max_size=4)
    ),
    max_leaves=10,
)


def _paths(spec: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in spec.items():
        out.append(prefix + key)
        if isinstance(value, dict):
            out += _paths(value, f"{prefix}{key}.")
    return out


def _mutate(spec: dict[str, Any], path: str, action: str, value: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps(spec))
    *parents, leaf = path.split(".")
    target = spec
    for parent in parents:
        target = target[parent]
    if action == "delete":
        target.pop(leaf)
    elif action == "replace":
        target[leaf] = value
    else:  # an extra key next to it
        target[f"{leaf}_extra"] = value
    return spec


def check_load(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    try:
        spec = load(path)
    except SpecError as error:
        message = str(error)
        assert message.startswith(f"{path}: "), message
        reason = message[len(f"{path}: ") :]
        assert (
            reason.startswith("not valid YAML") or NAMES_A_KEY.match(reason) or ": unknown key; valid keys:" in reason
        ), message
    else:
        assert validate(spec.to_dict()) == spec


@FUZZ
@given(
    pieces=st.lists(
        st.sampled_from(list("abcdeps_:{}[],-&*!|>'\"#?\n 0129.") + ["batch_size", "schedule", "dataset", "width"]),
        max_size=40,
    )
)
def test_random_yaml_text(tmp_path: Path, pieces: list[str]) -> None:
    check_load(tmp_path / "run.yaml", "".join(pieces))


@FUZZ
@given(document=values)
def test_random_yaml_documents(tmp_path: Path, document: Any) -> None:
    check_load(tmp_path / "run.yaml", yaml.safe_dump(document))


@FUZZ
@given(
    mutations=st.lists(
        st.tuples(
            st.sampled_from(_paths(VALID)), st.sampled_from(["replace"] * 3 + ["delete", "extra"]), scalars | values
        ),
        min_size=1,
        max_size=2,
    ),
    as_json=st.booleans(),
)
@example(mutations=[("width", "replace", 10**400)], as_json=False)  # beyond the float range
@example(mutations=[("batch_size", "replace", 10**11)], as_json=True)
@example(mutations=[("schedule.epochs", "replace", 3)], as_json=True)  # no epoch at eps_target
def test_mutations_of_a_valid_spec(tmp_path: Path, mutations: list[tuple[str, str, Any]], as_json: bool) -> None:
    spec = VALID
    for path, action, value in mutations:
        try:
            spec = _mutate(spec, path, action, value)
        except (KeyError, TypeError, AttributeError):  # an earlier mutation removed or replaced the parent
            continue
    try:
        text = json.dumps(spec) if as_json else yaml.safe_dump(spec)
    except ValueError:  # a huge integer JSON will not write
        text = yaml.safe_dump(spec)
    check_load(tmp_path / "run.yaml", text)


def test_the_valid_base_is_valid(tmp_path: Path) -> None:
    check_load(tmp_path / "run.yaml", json.dumps(VALID))
    assert load(tmp_path / "run.yaml").batch_size == 16
