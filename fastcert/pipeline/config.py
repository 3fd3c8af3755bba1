"""Reading the workflow's YAML files against their schemas, with errors a person can act on.

Why not Snakemake's ``validate``: its message for one misspelled key is the whole schema (~15 KB).
Here every problem is one line naming the file, the key path and, for a misspelled key or value, the
nearest valid one. Defaults from the schema are filled in, as Snakemake's ``validate`` does.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from fastcert.io import load_yaml
from fastcert.pipeline.errors import ExperimentError


def _with_defaults(validator_class: Any) -> Any:
    """A validator class that fills each property's ``default`` before validating it."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator: Any, schema_properties: dict, instance: Any, schema: dict) -> Iterator[ValidationError]:
        if isinstance(instance, dict):
            for name, subschema in schema_properties.items():
                if isinstance(subschema, dict) and "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from check_properties(validator, schema_properties, instance, schema)

    return validators.extend(validator_class, {"properties": properties})


DefaultFillingValidator = _with_defaults(Draft202012Validator)


def nearest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or the list of valid ones when none is close."""
    choices = [str(choice) for choice in choices]
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (valid: {', '.join(choices)})"


def key_path(path: Iterable[Any]) -> str:
    """``targets.table2.groups[0]`` for jsonschema's deque of keys and indices."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def describe(error: ValidationError) -> list[str]:
    """One line per problem: the key path, what is wrong and, for names, the nearest valid one."""
    where = key_path(error.absolute_path) or "top level"
    # the isinstance checks narrow jsonschema's types (a validator's errors always carry a schema, and
    # an enum is a list); anything else gets the generic message
    if (
        error.validator == "additionalProperties"
        and isinstance(error.instance, dict)
        and isinstance(error.schema, Mapping)
    ):
        known = error.schema.get("properties", {})
        extra = [key for key in error.instance if key not in known]
        return [f"{where}: unknown key {key!r}{nearest(str(key), known)}" for key in extra]
    if error.validator == "enum" and isinstance(error.validator_value, list):
        return [f"{where}: {error.instance!r} is not allowed{nearest(str(error.instance), error.validator_value)}"]
    return [f"{where}: {error.message}"]


def check(data: Any, schema: dict[str, Any], source: str) -> None:
    """Validate ``data`` in place (defaults filled); raise one line per problem, naming ``source``."""
    problems = []
    for error in sorted(DefaultFillingValidator(schema).iter_errors(data), key=lambda e: list(map(str, e.path))):
        problems += describe(error)
    if problems:
        raise ExperimentError("\n".join(f"{source}: {problem}" for problem in problems))


def read_yaml(path: str | Path) -> Any:
    """A YAML (or JSON) file, a key written twice refused (fastcert.io.load_yaml); errors name the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            return load_yaml(handle)
    except OSError as error:
        raise ExperimentError(f"{path}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError:
        raise ExperimentError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as error:
        raise ExperimentError(f"{path}: not valid YAML: {error}") from None


def load_schema(path: str | Path) -> dict[str, Any]:
    """A schema file (YAML or JSON)."""
    return read_yaml(path)


def load_checked(path: str, schema_path: str | Path) -> Any:
    """Read a YAML file and validate it against a schema (filling defaults); errors name the file."""
    data = read_yaml(path)
    check(data, load_schema(schema_path), path)
    return data


def choose_scale(scales: dict[str, Any], name: str, scales_path: str) -> dict[str, Any]:
    """The named scale; a name the scales file does not define is reported with the nearest one."""
    if name not in scales:
        raise ExperimentError(
            f"config scale: unknown scale {name!r}{nearest(name, scales)}; scales are defined in {scales_path}"
        )
    return scales[name]
