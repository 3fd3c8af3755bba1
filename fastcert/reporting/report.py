"""The reproduction report: one LaTeX document with every table and figure and a summary of where
the reproduction agrees with the paper.

Why it recomputes the comparison: the report receives the rendered tables (``results/*.tex``), the
figures and the manifests. It includes the rendered files as they are, and rebuilds each table's
cells with the same engine and inputs (:func:`fastcert.reporting.tables.build_target`) to count agreements,
so the summary can never disagree with the tables it sits next to. The document is compiled with
pdflatex in a temporary folder and moved into place.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fastcert import __version__
from fastcert.records import DEFAULT_CHECKPOINT
from fastcert.reporting.collect import Manifest, load_manifest, load_producer
from fastcert.reporting.figures import FIGURES, provenance, scale_note
from fastcert.reporting.latex import (
    PREAMBLE,
    compile_pdf,
    escape,
    fmt_delta,
    fmt_number,
    render_template,
)
from fastcert.reporting.tables import (
    Cell,
    Table,
    build_target,
    load_paper,
    tolerance_text,
)


@dataclass
class Disagreement:
    """One cell outside its tolerance, as listed in the report (LaTeX strings)."""

    row: str
    metric: str
    ours: str
    paper: str
    delta: str
    rule: str


@dataclass
class TableSummary:
    """Agreement counts of one table; ``without_ours``: the paper has a number, we have none."""

    name: str
    data: str
    tolerance: str
    agree: int = 0
    disagree: int = 0
    without_ours: int = 0
    not_compared: int = 0
    disagreements: list[Disagreement] = field(default_factory=list)

    @property
    def number(self) -> int:
        return _number(self.name)


def _number(name: str) -> int:
    match = re.fullmatch(r"(?:table|figure)(\d+)", name)
    if not match:
        raise ValueError(f"not a table or figure name: {name!r}")
    return int(match[1])


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summarize(table: Table) -> TableSummary:
    """Count the cells of ``table`` that agree, disagree, lack our number, or are not compared."""
    summary = TableSummary(table.name, escape(table.data), tolerance_text(table.layout))
    headers = {m["name"]: m for m in table.layout["metrics"]}
    for row in table.rows:
        if row.kind == "literature":
            continue
        for cell in row.cells:
            metric = headers[cell.metric]
            if cell.agree is True:
                summary.agree += 1
            elif cell.agree is False:
                summary.disagree += 1
                summary.disagreements.append(_disagreement(row.group, row.label, metric, cell))
            elif metric.get("compare", True) and _is_number(cell.paper) and cell.ours is None:
                summary.without_ours += 1
            else:
                summary.not_compared += 1
    return summary


def _disagreement(group: str, label: list[str], metric: dict, cell: Cell) -> Disagreement:
    # a disagreeing cell was compared (tables._compare): both numbers, the difference and its rule are set
    assert isinstance(cell.paper, (int, float)) and cell.ours is not None
    assert cell.delta is not None and cell.tolerance_rule is not None
    digits = metric["digits"]
    paper = fmt_number(float(cell.paper), digits) + (
        f"$\\pm${fmt_number(cell.paper_std, digits)}" if cell.paper_std is not None else ""
    )
    return Disagreement(
        f"{group}: {' '.join(label)}",
        metric["header"],
        fmt_number(cell.ours, digits),
        paper,
        fmt_delta(cell.delta, digits),
        f"outside {cell.tolerance_rule}",
    )


def _by_name(paths: list[str | os.PathLike], kind: str) -> dict[str, Path]:
    """``{"table1": Path(...)}`` from file names like ``results/table1.tex``, in numeric order."""
    named = {}
    for path in paths:
        stem = Path(path).stem
        if not re.fullmatch(rf"{kind}\d+", stem):
            raise ValueError(f"{path}: expected a file named {kind}<N>")
        named[stem] = Path(path)
    return dict(sorted(named.items(), key=lambda item: _number(item[0])))


def build_report(
    *,
    tables: list[str | os.PathLike],
    figures: list[str | os.PathLike],
    manifests: list[str | os.PathLike],
    paper_path: str | os.PathLike,
    output: str | os.PathLike,
    producers: Sequence[str | os.PathLike] = (),
    scales_path: str | os.PathLike | None = None,
    experiments_path: str | os.PathLike | None = None,
    checkpoint: str = DEFAULT_CHECKPOINT,
    root: str | os.PathLike | None = None,
) -> list[TableSummary]:
    """Write ``output`` (PDF): every table and figure, the agreement summary and, given ``scales_path``
    (config/scales.yaml), what each scale shows and costs, and given ``experiments_path``
    (config/experiments.yaml), the settings that differ from the paper's text; return the summary."""
    table_files, figure_files = _by_name(tables, "table"), _by_name(figures, "figure")
    loaded = {Path(p).stem: load_manifest(p, root) for p in manifests}
    documents = [load_producer(path) for path in producers]
    paper = load_paper(paper_path)
    summaries = []
    for name in table_files:
        if name not in loaded:
            raise ValueError(f"no manifest for {name} among the report's inputs")
        summaries.append(
            summarize(
                build_target(
                    name,
                    paper,
                    loaded[name],
                    checkpoint=checkpoint,
                    producers=[d for d in documents if name in d.targets],
                )
            )
        )
    figure_entries = []
    for name in figure_files:
        if name not in loaded:
            raise ValueError(f"no manifest for {name} among the report's inputs")
        figure_entries.append(_figure_entry(name, loaded[name]))
    files = {f"tables/{name}.tex": path for name, path in table_files.items()}
    files.update({f"figures/{name}.pdf": path for name, path in figure_files.items()})
    tex = render_template(
        "report.tex.j2",
        preamble=PREAMBLE,
        version=escape(__version__),
        scales=_scales(loaded),
        notes=[escape(note) for note in sorted({m.scale_note for m in loaded.values() if m.scale_note})],
        scale_rows=_scale_rows(scales_path, {m.scale for m in loaded.values()}),
        differences=_difference_rows(experiments_path, loaded),
        summaries=summaries,
        tables=[{"name": n, "number": _number(n)} for n in table_files],
        figures=figure_entries,
        checkpoint=checkpoint,
        totals={
            k: sum(getattr(s, k) for s in summaries) for k in ("agree", "disagree", "without_ours", "not_compared")
        },
    )
    compile_pdf(tex, output, files=files)
    return summaries


def _figure_entry(name: str, manifest: Manifest) -> dict[str, str | int]:
    spec = FIGURES[name]
    note = scale_note(name, manifest)
    return {
        "name": name,
        "number": _number(name),
        "caption": f"{spec['caption']} {manifest.differences_text()}".strip(),
        "provenance": escape(provenance(name, manifest)),
        "paper": escape(spec["paper"]),
        "note": f"\\textbf{{{escape(note)}}} " if note else "",
    }


def _scale_rows(path: str | os.PathLike | None, used: set[str]) -> list[dict[str, Any]]:
    """One row per scale of config/scales.yaml: what it runs, shows and costs (LaTeX), this report's marked."""
    if path is None:
        return []
    scales = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(scales, dict):
        raise ValueError(f"{path}: not a scales file (expected a mapping of scale names)")
    rows = []
    for name, scale in scales.items():
        missing = [key for key in ("description", "shows", "cost") if key not in scale]
        if missing:
            raise ValueError(f"{path}: scale {name!r} lacks {', '.join(missing)}")
        rows.append(
            {
                "name": escape(name),
                "current": name in used,
                "description": escape(scale["description"]),
                "shows": escape(scale["shows"]),
                "cost": escape(scale["cost"]),
            }
        )
    return rows


_KINDS = {  # how a default relates to the paper's text, in the report's words
    "code": "the authors' code, against the paper's text",
    "text": "the paper's text, against the authors' later code",
    "inferred": "inferred: the paper does not say",
}


def _difference_rows(path: str | os.PathLike | None, manifests: dict[str, Manifest]) -> list[dict[str, str | bool]]:
    """One entry per ``differences`` item of config/experiments.yaml (LaTeX), saying which choice the
    report's runs made (the default, or the variant chosen with ``--config variants=[...]``)."""
    if path is None:
        return []
    experiments = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    chosen = {d["name"] for m in manifests.values() for d in m.differences if d["variant"]}
    rows: list[dict[str, str | bool]] = []
    for name, item in (experiments.get("differences") or {}).items():
        targets = ", ".join(_target_label(target) for target in item["targets"])
        rows.append(
            {
                "name": escape(name),
                "setting": escape(item["setting"]),
                "kind": escape(_KINDS[item["kind"]]),
                "paper": escape(item["paper"]),
                "default": escape(item["default"]),
                "evidence": escape(" ".join(item["evidence"].split())),
                "targets": targets,
                "variant": escape(item["variant"]["description"]),
                "used": name in chosen,
            }
        )
    return rows


def _target_label(target: str) -> str:
    kind = "Table" if target.startswith("table") else "Figure"
    return f"{kind}~{_number(target)}"


def _scales(manifests: dict[str, Manifest]) -> str:
    texts = sorted({m.scale_text for m in manifests.values()})
    return escape("; ".join(texts)) if texts else "unknown"
