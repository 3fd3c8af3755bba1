"""A scale's HTML report page from its made-up input tree (tests/report_builders.py): the figures drawn,
a plan written by hand, the page built; with the Table objects it shows, so that tests know what to expect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from report_builders import scale_tree

from fastcert.io import load_yaml
from fastcert.reporting.collect import load_manifest, load_producer
from fastcert.reporting.figures import FIGURES, draw, save
from fastcert.reporting.report import build_html_report
from fastcert.reporting.tables import Table, build_target, load_paper

SCALES_PATH = Path(__file__).resolve().parents[1] / "config" / "scales.yaml"
PLAN = "# plan at scale 'smoke': by hand\n# runs: distinct runs\ntarget\truns\nall\t3\n"


def build_page(root: Path, scale: str) -> dict[str, Any]:
    """Write ``root/reports/report.html`` for ``scale``; return its path and the tables it shows."""
    tree = scale_tree(root, scale)
    producers = [load_producer(path) for path in tree["producers"]]
    figures = []
    for name in FIGURES:
        path = root / "results" / "figures" / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest = load_manifest(tree["manifests"][name], root)
        save(draw(name, manifest, [p for p in producers if name in p.targets]), {"png": str(path)})
        figures.append(path)
    plan = root / "results" / "plan.tsv"
    plan.write_text(PLAN, encoding="utf-8")
    page = root / "reports" / "report.html"
    build_html_report(
        figures=figures,
        manifests=list(tree["manifests"].values()),
        paper_path=tree["paper"],
        output=page,
        producers=tree["producers"],
        plan=plan,
        scales=load_yaml(SCALES_PATH.read_text(encoding="utf-8")),
        root=root,
    )
    paper = load_paper(tree["paper"])
    tables: dict[str, Table] = {
        name: build_target(
            name, paper, load_manifest(path, root), producers=[p for p in producers if name in p.targets]
        )
        for name, path in tree["manifests"].items()
        if name.startswith("table")
    }
    return {"page": page, "tables": tables, "figures": list(FIGURES)}


def body_rows(table: Table) -> int:
    """Rows of the table's <tbody>s on the page: one per row and one header per group."""
    return len(table.rows) + len({row.group for row in table.rows})
