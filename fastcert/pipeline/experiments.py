"""The experiment grammar (config/experiments.yaml): targets -> groups -> rows -> runs.

Why in one place: every table, figure, the plan and the training rule must agree on which runs exist.
Each run spec is validated by the runner's own validator (:mod:`fastcert.run.spec`) and named by its
hash, so a bad spec fails before any job is queued, and a run that several targets need maps to one
directory and one job.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

from fastcert.pipeline.config import nearest
from fastcert.pipeline.errors import ExperimentError
from fastcert.pipeline.scales import deep_merge, scale_spec
from fastcert.run.spec import RunSpec, SpecError
from fastcert.run.spec import validate as validate_spec

RUNS_DIR = "runs"


@dataclass(frozen=True)
class Expansion:
    """Every target's manifest entries at one scale and the distinct runs they need (by run id)."""

    runs: dict[str, RunSpec]
    manifests: dict[str, list[dict[str, Any]]]
    not_run: dict[str, list[dict[str, Any]]]  # row keys a target declares that the scale does not run
    differences: dict[str, list[dict[str, Any]]] = dataclasses.field(default_factory=dict)  # per target

    def run_spec(self, rid: str, scale_name: str) -> RunSpec:
        """The spec of a run directory name, with a clear error for names no target needs."""
        try:
            return self.runs[rid]
        except KeyError:
            raise ExperimentError(f"{RUNS_DIR}/{rid}: no target needs this run at scale {scale_name!r}") from None

    def run_dirs(self, target: str) -> list[str]:
        """The distinct run directories a target needs, sorted."""
        return sorted({entry["run_dir"] for entry in self.manifests[target]})

    def targets(self, kind: str) -> list[str]:
        """Target names of one kind (``table`` or ``figure``) in declaration order."""
        return [target for target in self.manifests if target.startswith(kind)]


def level(experiments: dict[str, Any], axis: str, name: str, where: str) -> tuple[dict, dict]:
    """One level (row keys + spec keys) of an axis; unknown names are reported with the valid ones."""
    levels = experiments["levels"].get(axis)
    if levels is None:
        raise ExperimentError(f"{where}.axes.{axis}: unknown axis; known: {', '.join(experiments['levels'])}")
    if name not in levels:
        raise ExperimentError(f"{where}.axes.{axis}: unknown level {name!r}; known: {', '.join(levels)}")
    found = levels[name]
    return found.get("key", {axis: name}), found.get("spec", {})


def repeat_count(repeats: int | dict, names: dict[str, str], where: str) -> int:
    """Repeats of one row: a number, or a count per level of one axis."""
    if isinstance(repeats, int):
        return repeats
    ((axis, counts),) = repeats.items()
    if axis not in names:
        raise ExperimentError(f"{where}.repeats.{axis}: not one of the group's axes")
    if names[axis] not in counts:
        raise ExperimentError(f"{where}.repeats.{axis}: no count for level {names[axis]!r}")
    return counts[names[axis]]


def spec_defaults() -> dict[str, Any]:
    """Every run-spec key at :class:`RunSpec`'s default, seed excepted (the expansion sets it): what
    a paper-scale spec holds where neither ``base`` nor a level sets a key."""
    defaults = RunSpec().to_dict()
    del defaults["seed"]
    return defaults


def group_rows(experiments: dict[str, Any], group: dict[str, Any], where: str) -> Iterator[tuple[dict, dict, int, str]]:
    """(row key, complete paper-scale spec without seed, repeats, where) for every combination of a
    group's levels; ``where`` names the combination in error messages."""
    axes = group["axes"]
    for combination in product(*axes.values()):
        names = dict(zip(axes, combination))
        key: dict[str, Any] = {}
        spec = deep_merge(spec_defaults(), experiments["base"])
        for axis, name in names.items():
            level_key, level_spec = level(experiments, axis, name, where)
            key.update(level_key)
            spec = deep_merge(spec, level_spec)
        row = f"{where} ({', '.join(f'{a}={n}' for a, n in names.items())})"
        if "keys" in group:
            absent = [name for name in group["keys"] if name not in key]
            if absent:
                raise ExperimentError(f"{where}.keys: {', '.join(absent)} not provided by any level")
            key = {name: key[name] for name in group["keys"]}
        yield key, spec, repeat_count(group["repeats"], names, where), row


def chosen_variants(experiments: dict[str, Any], names: Sequence[str], where: str) -> dict[str, dict[str, Any]]:
    """The differences (config/experiments.yaml) whose other choice is run instead of the default."""
    differences = experiments.get("differences", {})
    for name in names:
        if name not in differences:
            raise ExperimentError(
                f"{where}: unknown variant {name!r}{nearest(name, differences)}; "
                f"variants are the names under `differences` of the experiments file"
            )
    return {name: differences[name] for name in names}


def _matches(spec: dict[str, Any], match: dict[str, Any]) -> bool:
    """A row's paper-scale spec has every ``match`` key's value (or one of a list of values)."""
    return all(
        spec.get(key) in value if isinstance(value, list) else spec.get(key) == value for key, value in match.items()
    )


def with_variants(
    target: str, spec: dict[str, Any], variants: dict[str, dict[str, Any]], changed: set[str]
) -> dict[str, Any]:
    """A row's paper-scale spec with every chosen variant of its target laid over it (``changed``
    collects the variants that changed a row, so that one that changes nothing is reported)."""
    for name, difference in variants.items():
        variant = difference["variant"]
        if target in difference["targets"] and _matches(spec, variant["match"]):
            spec = deep_merge(spec, variant["spec"])
            changed.add(name)
    return spec


def selected(patterns: list[dict[str, Any]] | None, key: dict[str, Any]) -> list[int]:
    """Indices of the scale's ``only`` patterns for a target that a row key matches (all of a
    pattern's keys equal); ``None`` (no ``only`` entry for the target) matches nothing."""
    return [index for index, pattern in enumerate(patterns or ()) if all(key.get(k) == v for k, v in pattern.items())]


def check_only(
    only: dict[str, list[dict[str, Any]]],
    experiments: dict[str, Any],
    matched: set[tuple[str, int]],
    keys: dict[str, set[str]],
    where: str,
) -> None:
    """Every target an ``only`` filter names exists, and each of its patterns selects at least one row
    (a misspelled key or value would otherwise silently run nothing)."""
    for target, patterns in only.items():
        if target not in experiments["targets"]:
            raise ExperimentError(f"{where}.only.{target}: not a target{nearest(target, experiments['targets'])}")
        for index, pattern in enumerate(patterns):
            if (target, index) not in matched:
                raise ExperimentError(
                    f"{where}.only.{target}[{index}]: {pattern} matches no row of {target} "
                    f"(its row keys: {', '.join(sorted(keys[target]))})"
                )


def run_id(spec: RunSpec) -> str:
    """Readable prefix + short hash of everything that defines the run (fastcert.run.spec's hash)."""
    return f"{spec.dataset}-{spec.model}-{spec.method}-e{spec.schedule.epochs}-{spec.hash()[:12]}"


def expand_targets(
    experiments: dict[str, Any],
    scale: dict[str, Any],
    scale_name: str,
    experiments_path: str,
    variants: Sequence[str] = (),
) -> Expansion:
    """Manifest entries per target and the distinct runs they need, at the given scale.

    A scale with an ``only`` filter runs just the rows it selects; the others are listed per target
    in ``not_run``, so that tables can say so instead of showing nothing. ``variants`` names
    differences (``differences`` of the experiments file) whose other choice replaces the default in
    the rows it matches; the row keys stay, so the tables still pair every row with the paper's.
    """
    chosen = chosen_variants(experiments, variants, "config variants")
    changed: set[str] = set()
    runs: dict[str, RunSpec] = {}
    manifests: dict[str, list[dict[str, Any]]] = {}
    not_run: dict[str, list[dict[str, Any]]] = {}
    only = scale.get("only")
    matched: set[tuple[str, int]] = set()
    keys: dict[str, set[str]] = {}
    for target, declaration in experiments["targets"].items():
        entries: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        for index, group in enumerate(declaration["groups"]):
            where = f"{experiments_path}: targets.{target}.groups[{index}]"
            for key, spec, repeats, row in group_rows(experiments, group, where):
                keys.setdefault(target, set()).update(key)
                if only is not None:
                    hits = selected(only.get(target), key)
                    matched.update((target, hit) for hit in hits)
                    if not hits:
                        if key not in skipped:
                            skipped.append(key)
                        continue
                if scale["max_repeats"] is not None:
                    repeats = min(repeats, scale["max_repeats"])
                spec = with_variants(target, spec, chosen, changed)
                for repeat in range(repeats):
                    raw = scale_spec({**spec, "seed": experiments["seed"] + repeat}, scale)
                    try:
                        resolved = validate_spec(raw)
                    except SpecError as error:
                        raise ExperimentError(f"{row}, scale {scale_name}: invalid run spec: {error}") from None
                    rid = run_id(resolved)
                    runs[rid] = resolved
                    entries.append(
                        {
                            "key": key,
                            "repeat": repeat,
                            "run_dir": f"{RUNS_DIR}/{rid}",
                            "spec": resolved.to_dict(),
                            "paper_schedule": spec["schedule"],
                        }
                    )
        manifests[target] = entries
        not_run[target] = skipped
    if only is not None:
        check_only(only, experiments, matched, keys, f"scale {scale_name}")
    unused = [name for name in chosen if name not in changed]
    if unused:
        raise ExperimentError(
            f"config variants: {', '.join(unused)} changes no run at scale {scale_name!r} "
            f"(no row of its targets matches its `match`, or its targets are not run)"
        )
    return Expansion(runs, manifests, not_run, target_differences(experiments, variants))


def manifest_document(expansion: Expansion, target: str, scale_name: str, scale: dict[str, Any]) -> dict[str, Any]:
    """The JSON a target's table/figure script reads (its manifest); ``not_run`` (rows declared but
    not run at this scale) only where there are such rows."""
    document = {
        "target": target,
        "scale": scale_name,
        "scale_description": scale["description"],
        "scale_note": scale.get("note"),
        "runs": expansion.manifests[target],
    }
    if expansion.not_run[target]:
        document["not_run"] = expansion.not_run[target]
    if expansion.differences.get(target):
        document["differences"] = expansion.differences[target]
    return document


def target_differences(experiments: dict[str, Any], variants: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Per target, the differences from the paper's text that concern it, as the experiments file
    states them (setting, kind, the paper's text, the default, evidence, the variant's description,
    targets), with which choice this run of the workflow made (``variant``): its caption names them
    and the report explains them from the manifests alone."""
    found: dict[str, list[dict[str, Any]]] = {}
    for name, difference in experiments.get("differences", {}).items():
        entry = {
            "name": name,
            "setting": difference["setting"],
            "variant": name in variants,
            "kind": difference["kind"],
            "paper": difference["paper"],
            "default": difference["default"],
            "evidence": " ".join(difference["evidence"].split()),
            "variant_description": difference["variant"]["description"],
            "targets": list(difference["targets"]),
        }
        for target in difference["targets"]:
            found.setdefault(target, []).append(entry)
    return found
