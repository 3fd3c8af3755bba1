"""Shared helpers: config validation, the expansion of experiments into runs, scales, run identity
and resource estimates.

Why at parse time and in one place: every table, figure, the plan and the training rule must agree
on which runs exist. Each run spec is validated by the runner's own validator (fastcert.run.spec) and
named by its hash, so a bad spec fails before any job is queued, and a run that several tables need
maps to one directory and one job.
"""

import dataclasses
import math
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from fastcert.run.data.catalog import DATASETS
from fastcert.run.spec import RunSpec, SpecError
from fastcert.run.spec import validate as validate_spec

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"
RUNS_DIR = "runs"
SPEC_KEYS = frozenset(field.name for field in dataclasses.fields(RunSpec)) - {"seed"}


def load_checked(path: str, schema: str) -> Any:
    """Read a YAML file and validate it against a schema (filling defaults); errors name the file."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as error:
        raise WorkflowError(f"{path}: cannot read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise WorkflowError(f"{path}: not valid YAML: {error}") from None
    try:
        validate(data, str(SCHEMAS / schema))
    except WorkflowError as error:
        raise WorkflowError(f"{path} is invalid:", error) from None
    return data


def deep_merge(base: dict, update: dict) -> dict:
    """``base`` with ``update`` laid over it; nested mappings merge, everything else is replaced."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# ---------------------------------------------------------------------------------------------
# Scales: transformations of paper-scale specs (config/scales.yaml)
# ---------------------------------------------------------------------------------------------


def dataset_transform(scale: dict, dataset: str) -> dict:
    """The scale's settings for one dataset: its per-dataset entry over the scale-wide values."""
    own = scale["datasets"].get(dataset, {})
    return {
        "width": own.get("width", scale["width"]),
        "schedule_factor": own.get("schedule_factor", scale["schedule_factor"]),
        "time_factor": own.get("time_factor", scale["time_factor"]),
        "spec": deep_merge(scale["spec"], own.get("spec", {})),
    }


def squeeze_schedule(schedule: dict, factor: float) -> dict:
    """Scale each ε phase's epoch count by ``factor``: a phase that exists keeps at least one epoch,
    the lr milestones keep their relative position."""
    if factor == 1:
        return schedule
    eps0 = schedule["start"] - 1
    ramp = schedule["length"]
    target = schedule["epochs"] - eps0 - ramp
    eps0, ramp, target = (math.ceil(n * factor) if n > 0 else 0 for n in (eps0, ramp, target))
    epochs = eps0 + ramp + target
    milestones = sorted(
        {min(epochs, max(1, round(m * epochs / schedule["epochs"]))) for m in schedule["milestones"]}
    )
    return {"start": eps0 + 1, "length": ramp, "epochs": epochs, "milestones": milestones}


def scale_spec(spec: dict, scale: dict) -> dict:
    """Apply a scale to a complete paper-scale spec."""
    transform = dataset_transform(scale, spec["dataset"])
    scaled = dict(spec)
    scaled["width"] = spec["width"] * transform["width"]
    scaled["schedule"] = squeeze_schedule(spec["schedule"], transform["schedule_factor"])
    return deep_merge(scaled, transform["spec"])


# ---------------------------------------------------------------------------------------------
# Experiments: targets -> groups -> runs (config/experiments.yaml)
# ---------------------------------------------------------------------------------------------


def level(experiments: dict, axis: str, name: str, where: str) -> tuple[dict, dict]:
    """One level (row keys + spec keys) of an axis; unknown names are reported with the valid ones."""
    levels = experiments["levels"].get(axis)
    if levels is None:
        raise WorkflowError(f"{where}.axes.{axis}: unknown axis; known: {', '.join(experiments['levels'])}")
    if name not in levels:
        raise WorkflowError(f"{where}.axes.{axis}: unknown level {name!r}; known: {', '.join(levels)}")
    found = levels[name]
    return found.get("key", {axis: name}), found.get("spec", {})


def repeat_count(repeats: int | dict, names: dict[str, str], where: str) -> int:
    """Repeats of one row: a number, or a count per level of one axis."""
    if isinstance(repeats, int):
        return repeats
    (axis, counts), = repeats.items()
    if axis not in names:
        raise WorkflowError(f"{where}.repeats.{axis}: not one of the group's axes")
    if names[axis] not in counts:
        raise WorkflowError(f"{where}.repeats.{axis}: no count for level {names[axis]!r}")
    return counts[names[axis]]


def group_rows(experiments: dict, group: dict, where: str) -> Iterator[tuple[dict, dict, int, str]]:
    """(row key, paper-scale spec without seed, repeats, where) for every combination of a group's
    levels; ``where`` names the combination in error messages."""
    axes = group["axes"]
    for combination in product(*axes.values()):
        names = dict(zip(axes, combination))
        key, spec = {}, dict(experiments["base"])
        for axis, name in names.items():
            level_key, level_spec = level(experiments, axis, name, where)
            key.update(level_key)
            spec = deep_merge(spec, level_spec)
        row = f"{where} ({', '.join(f'{a}={n}' for a, n in names.items())})"
        missing = sorted(SPEC_KEYS - set(spec))
        if missing:
            raise WorkflowError(f"{row}: the run spec lacks {', '.join(missing)} (add them to a level or to base)")
        if "keys" in group:
            absent = [name for name in group["keys"] if name not in key]
            if absent:
                raise WorkflowError(f"{where}.keys: {', '.join(absent)} not provided by any level")
            key = {name: key[name] for name in group["keys"]}
        yield key, spec, repeat_count(group["repeats"], names, where), row


def run_id(spec: RunSpec) -> str:
    """Readable prefix + short hash of everything that defines the run (fastcert.run.spec's hash)."""
    return f"{spec.dataset}-{spec.model}-{spec.method}-e{spec.schedule.epochs}-{spec.hash()[:12]}"


def expand_targets(
    experiments: dict, scale: dict, scale_name: str, experiments_path: str
) -> tuple[dict[str, RunSpec], dict[str, list[dict]]]:
    """Manifest entries per target and the distinct runs they need, at the given scale."""
    runs, manifests = {}, {}
    for target, declaration in experiments["targets"].items():
        entries = []
        for index, group in enumerate(declaration["groups"]):
            where = f"{experiments_path}: targets.{target}.groups[{index}]"
            for key, spec, repeats, row in group_rows(experiments, group, where):
                if scale["max_repeats"] is not None:
                    repeats = min(repeats, scale["max_repeats"])
                for repeat in range(repeats):
                    raw = scale_spec({**spec, "seed": experiments["seed"] + repeat}, scale)
                    try:
                        resolved = validate_spec(raw)
                    except SpecError as error:
                        raise WorkflowError(f"{row}, scale {scale_name}: invalid run spec: {error}") from None
                    rid = run_id(resolved)
                    runs[rid] = resolved
                    entries.append(
                        {"key": key, "repeat": repeat, "run_dir": f"{RUNS_DIR}/{rid}", "spec": resolved.to_dict(),
                         "paper_schedule": spec["schedule"]}
                    )
        manifests[target] = entries
    return runs, manifests


# ---------------------------------------------------------------------------------------------
# Resource estimates (the paper's Table 7 per-epoch times as a guide)
# ---------------------------------------------------------------------------------------------


def data_fraction(spec: RunSpec) -> float:
    """Fraction of the full training set a run uses."""
    return min(1.0, (spec.data.train_size or math.inf) / DATASETS[spec.dataset].n_train)


def estimated_seconds(spec: RunSpec) -> float:
    """Expected wall time of one run on the reference GPU, scaled to the run's size and scale."""
    guide = config["train"]["epoch_seconds"][spec.dataset][spec.model][spec.method]
    schedule = spec.schedule
    counts = (schedule.start - 1, schedule.length, schedule.epochs - schedule.start + 1 - schedule.length)
    seconds = sum(n * t for n, t in zip(counts, guide)) * data_fraction(spec) * spec.width**2
    return seconds * dataset_transform(SCALE, spec.dataset)["time_factor"] / config["train"]["gpu_speedup"]


def runtime_minutes(wildcards: Any, attempt: int) -> int:
    """Requested runtime: the estimate with a margin, longer on every retry, never below the floor."""
    settings = config["train"]
    minutes = estimated_seconds(run_spec_of(wildcards.run_id)) / 60 * settings["margin"]
    return math.ceil(max(settings["min_runtime"], minutes) * attempt)


def memory_mb(wildcards: Any) -> int:
    """Host memory: a base plus the dataset held in memory, scaled by the fraction of it used."""
    spec = run_spec_of(wildcards.run_id)
    memory = config["train"]["mem_mb"]
    return math.ceil(memory["base"] + memory[spec.dataset] * data_fraction(spec))


# ---------------------------------------------------------------------------------------------
# Accessors used by the rules
# ---------------------------------------------------------------------------------------------


def run_spec_of(rid: str) -> RunSpec:
    """The validated spec of a run directory name, with a clear error for names no target needs."""
    try:
        return RUNS[rid]
    except KeyError:
        raise WorkflowError(f"{RUNS_DIR}/{rid}: no target needs this run at scale {config['scale']!r}") from None


def run_files(target: str) -> list[str]:
    """result.json of every distinct run a target needs (sorted, no duplicates)."""
    return sorted({f"{entry['run_dir']}/result.json" for entry in MANIFESTS[target]})


def manifest_document(target: str) -> dict:
    """The JSON a target's table/figure script reads (results/manifests/<target>.json)."""
    return {
        "target": target,
        "scale": config["scale"],
        "scale_description": SCALE["description"],
        "scale_note": SCALE.get("note"),
        "runs": MANIFESTS[target],
    }


def producer_inputs(target: str) -> list[str]:
    """The producer documents (config/producers.yaml) a table or figure reads; none for most (they read runs)."""
    return [f"results/producers/{name}.json" for name, declared in PRODUCERS.items() if target in declared["for"]]


def spec_yaml(rid: str) -> str:
    """The spec file a run's job writes before training (its identity is the directory name)."""
    return yaml.safe_dump(run_spec_of(rid).to_dict(), sort_keys=True)


# ---------------------------------------------------------------------------------------------
# Parse-time state
# ---------------------------------------------------------------------------------------------

validate(config, str(SCHEMAS / "config.schema.yaml"))
EXPERIMENTS = load_checked(config["experiments"], "experiments.schema.yaml")
SCALE = load_checked(config["scales"], "scales.schema.yaml")[config["scale"]]
RUNS, MANIFESTS = expand_targets(EXPERIMENTS, SCALE, config["scale"], config["experiments"])
PRODUCERS_PATH = config.get("producers", "config/producers.yaml")
PRODUCERS = load_checked(PRODUCERS_PATH, "producers.schema.yaml")
TABLES = [target for target in MANIFESTS if target.startswith("table")]
FIGURES = [target for target in MANIFESTS if target.startswith("figure")]
