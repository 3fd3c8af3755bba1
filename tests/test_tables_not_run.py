"""Rows a scale declares but does not run (its `only` filter) render as "not run at this scale"."""

from __future__ import annotations

import json
from pathlib import Path

from run_builders import write_manifest, write_run

from fastcert.reporting.collect import load_manifest
from fastcert.reporting.tables import (
    NOT_RUN_AT_SCALE,
    build_target,
    load_paper,
    normalize,
)

ROOT = Path(__file__).resolve().parents[1]
MNIST_CNN7 = {"dataset": "MNIST", "schedule_total": 70, "schedule_phases": [0, 20, 50], "model": "CNN-7"}
CIFAR_RESNEXT = {"dataset": "CIFAR-10", "schedule_total": 160, "schedule_phases": [1, 80, 79], "model": "ResNeXt"}


def test_rows_not_run_at_this_scale_say_so_and_ran_rows_keep_their_numbers(tmp_path: Path) -> None:
    write_run(tmp_path / "runs/ours", verified=0.2)
    path = write_manifest(tmp_path / "m/table1.json", "table1", [({**MNIST_CNN7, "method": "Ours"}, "runs/ours")])
    document = json.loads(path.read_text())
    document["not_run"] = [{**CIFAR_RESNEXT, "method": method} for method in ("Vanilla IBP", "Ours")]
    path.write_text(json.dumps(document))
    table = build_target("table1", load_paper(ROOT / "config" / "paper_results.yaml"), load_manifest(path, tmp_path))

    def row(kind: str = "run", **key: object):
        (found,) = [
            r
            for r in table.rows
            if r.kind == kind and all(normalize(r.key.get(k)) == normalize(v) for k, v in key.items())
        ]
        return found

    skipped = row(**CIFAR_RESNEXT, method="Ours")
    assert {cell.note for cell in skipped.cells} == {NOT_RUN_AT_SCALE} and skipped.n_text == "---"
    assert {cell.note for cell in row("best", **CIFAR_RESNEXT).cells} == {NOT_RUN_AT_SCALE}
    ran = row(**MNIST_CNN7, method="Ours")
    assert ran.n_text == "1/1" and next(c for c in ran.cells if c.metric == "verified").ours == 20.0
    # a row the manifest neither runs nor lists as skipped stays the plain "not run" dash
    assert {cell.note for cell in row(**CIFAR_RESNEXT, method="CROWN-IBP").cells} == {"not run"}
    latex = table.to_latex()
    assert r"Ours & ResNeXt & --- & \textit{not run at this scale}" in latex
