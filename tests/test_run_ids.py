"""Run ids are identities: every run directory already trained is found again only if its id never
changes. tests/fixtures/run_ids.json holds every run id of every scale (and a digest of the ids of
each variant at each scale) as computed from config/ before the method table and the defaults moved
(issue 19 §2); any refactoring of specs, defaults or the experiment grammar must leave them equal.

Regenerate (only when a change of run identity is intended, and say so in the commit):
``PYTHONPATH=. python tests/test_run_ids.py > tests/fixtures/run_ids.json``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from fastcert.pipeline.config import load_checked
from fastcert.pipeline.errors import ExperimentError
from fastcert.pipeline.experiments import expand_targets

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "run_ids.json"


def _load(name: str) -> dict[str, Any]:
    return load_checked(str(REPO / "config" / f"{name}.yaml"), REPO / "workflow" / "schemas" / f"{name}.schema.yaml")


def current_run_ids() -> dict[str, Any]:
    """``{"scales": {scale: [run ids]}, "variants": {"scale+variant": digest | "changes no run"}}``."""
    experiments, scales = _load("experiments"), _load("scales")
    ids: dict[str, list[str]] = {}
    variants: dict[str, str] = {}
    for name, scale in scales.items():
        ids[name] = sorted(expand_targets(experiments, scale, name, "experiments.yaml").runs)
        for variant in experiments["differences"]:
            try:
                runs = expand_targets(experiments, scale, name, "experiments.yaml", [variant]).runs
            except ExperimentError:
                variants[f"{name}+{variant}"] = "changes no run"
                continue
            variants[f"{name}+{variant}"] = hashlib.sha256("\n".join(sorted(runs)).encode()).hexdigest()
    return {"scales": ids, "variants": variants}


def test_run_ids_at_every_scale_and_variant_are_unchanged() -> None:
    recorded = json.loads(FIXTURE.read_text(encoding="utf-8"))
    current = current_run_ids()
    for scale, ids in recorded["scales"].items():  # a scale or variant added later is not checked here
        assert current["scales"].get(scale) == ids, f"run ids of scale {scale} changed"
    for variant, digest in recorded["variants"].items():
        assert current["variants"].get(variant) == digest, f"run ids of {variant} changed"
    assert len(recorded["scales"]["paper"]) == 226 and len(recorded["scales"]["demo"]) == 3


if __name__ == "__main__":
    json.dump(current_run_ids(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
