"""The reproduction report: every table and figure and a summary of where the reproduction agrees
with the paper, as a LaTeX document (PDF) and as one self-contained HTML page that needs no TeX.

Why it recomputes the comparison: the report receives the rendered tables (``results/*.tex``), the
figures and the manifests. It includes the rendered files as they are, and rebuilds each table's
cells with the same engine and inputs (:func:`fastcert.reporting.tables.build_target`) to count agreements,
so the summary can never disagree with the tables it sits next to. The document is compiled with
pdflatex in a temporary folder and moved into place. The page is built from the same Table objects
(:mod:`fastcert.reporting.html`), from the same context as the document: the two cannot say different
things. Everything it shows comes from the manifests (the scale, its note, the settings that differ
from the paper), the run directories and producer documents they name, the plan and the figures' PNGs;
no configuration file is read here.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from fastcert import __version__
from fastcert.io import atomic_write_text
from fastcert.records import DEFAULT_CHECKPOINT, Status
from fastcert.reporting.collect import Manifest, Run, load_manifest, load_producer
from fastcert.reporting.figures import FIGURES, provenance, scale_note
from fastcert.reporting.html import environment, render_table
from fastcert.reporting.latex import (
    PREAMBLE,
    compile_pdf,
    escape,
    fmt_delta,
    fmt_number,
    render_template,
)
from fastcert.reporting.tables import (
    NOT_RUN_AT_SCALE,
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


class CheckpointGap(NamedTuple):
    """How far the best checkpoint's verified error lies from the last one's, percentage points."""

    runs: int
    mean: float
    largest: float


def checkpoint_gap(manifests: Sequence[Manifest]) -> CheckpointGap | None:
    """|best − last| verified error over the distinct completed runs of ``manifests`` (None if none):
    the best checkpoint is chosen on the test set, so this is how much that choice can flatter."""
    gaps = {}
    for manifest in manifests:
        for run in manifest.runs:
            best, last = (run.result[k] if run.usable and run.result else None for k in ("best", "last"))
            if best and last and best["verified_err"] is not None and last["verified_err"] is not None:
                gaps[run.run_dir] = 100 * abs(best["verified_err"] - last["verified_err"])
    if not gaps:
        return None
    return CheckpointGap(len(gaps), sum(gaps.values()) / len(gaps), max(gaps.values()))


def _tables(
    names: Sequence[str],
    loaded: dict[str, Manifest],
    paper_path: str | os.PathLike,
    producers: Sequence[str | os.PathLike],
    checkpoint: str,
) -> list[Table]:
    """The tables ``names``, each from its manifest (and producer), as the table rule builds them."""
    documents = [load_producer(path) for path in producers]
    paper = load_paper(paper_path)
    tables = []
    for name in names:
        if name not in loaded:
            raise ValueError(f"no manifest for {name} among the report's inputs")
        producing = [d for d in documents if name in d.targets]
        tables.append(build_target(name, paper, loaded[name], checkpoint=checkpoint, producers=producing))
    return tables


def _context(
    loaded: dict[str, Manifest],
    tables: list[Table],
    figures: Sequence[str],
    scales: Mapping[str, Mapping[str, Any]] | None,
    checkpoint: str,
) -> dict[str, Any]:
    """What both the document and the page say (text in the tables' LaTeX subset)."""
    for name in figures:
        if name not in loaded:
            raise ValueError(f"no manifest for {name} among the report's inputs")
    summaries = [summarize(table) for table in tables]
    return {
        "version": escape(__version__),
        "scales": _scales(loaded),
        "notes": [escape(note) for note in sorted({m.scale_note for m in loaded.values() if m.scale_note})],
        "scale_rows": _scale_rows(scales, {m.scale for m in loaded.values()}),
        "differences": _difference_rows(loaded),
        "summaries": summaries,
        "tables": [{"name": t.name, "number": _number(t.name)} for t in tables],
        "figures": [_figure_entry(name, loaded[name]) for name in figures],
        "checkpoint": checkpoint,
        "checkpoint_gap": checkpoint_gap(list(loaded.values())),
        "totals": {
            k: sum(getattr(s, k) for s in summaries) for k in ("agree", "disagree", "without_ours", "not_compared")
        },
    }


def build_report(
    *,
    tables: list[str | os.PathLike],
    figures: list[str | os.PathLike],
    manifests: list[str | os.PathLike],
    paper_path: str | os.PathLike,
    output: str | os.PathLike,
    producers: Sequence[str | os.PathLike] = (),
    scales: Mapping[str, Mapping[str, Any]] | None = None,
    checkpoint: str = DEFAULT_CHECKPOINT,
    root: str | os.PathLike | None = None,
) -> list[TableSummary]:
    """Write ``output`` (PDF): every table and figure, the agreement summary, the settings that differ
    from the paper's text (from the manifests) and, given ``scales`` (config/scales.yaml as the
    workflow read it), what each scale shows and costs; return the summary."""
    table_files, figure_files = _by_name(tables, "table"), _by_name(figures, "figure")
    loaded = {Path(p).stem: load_manifest(p, root) for p in manifests}
    built = _tables(list(table_files), loaded, paper_path, producers, checkpoint)
    context = _context(loaded, built, list(figure_files), scales, checkpoint)
    files = {f"tables/{name}.tex": path for name, path in table_files.items()}
    files.update({f"figures/{name}.pdf": path for name, path in figure_files.items()})
    compile_pdf(render_template("report.tex.j2", preamble=PREAMBLE, **context), output, files=files)
    summaries: list[TableSummary] = context["summaries"]
    return summaries


def build_html_report(
    *,
    figures: list[str | os.PathLike],
    manifests: list[str | os.PathLike],
    paper_path: str | os.PathLike,
    output: str | os.PathLike,
    producers: Sequence[str | os.PathLike] = (),
    plan: str | os.PathLike | None = None,
    scales: Mapping[str, Mapping[str, Any]] | None = None,
    checkpoint: str = DEFAULT_CHECKPOINT,
    root: str | os.PathLike | None = None,
) -> list[TableSummary]:
    """Write ``output``: the report as one HTML file that opens anywhere without a network or TeX.

    Every table of ``manifests`` (built as for the PDF), every figure of ``figures`` (PNGs, embedded
    as data URIs), the plan (``plan``: the workflow's plan.tsv) and the runs that are missing,
    diverged or interrupted; CSS inline, no scripts. Returns the summary."""
    figure_files = _by_name(figures, "figure")
    loaded = {Path(p).stem: load_manifest(p, root) for p in manifests}
    names = sorted((name for name in loaded if name.startswith("table")), key=_number)
    built = _tables(names, loaded, paper_path, producers, checkpoint)
    context = _context(loaded, built, list(figure_files), scales, checkpoint)
    for entry in context["figures"]:
        entry["src"] = "data:image/png;base64," + base64.b64encode(figure_files[entry["name"]].read_bytes()).decode()
    page = (
        environment()
        .get_template("report.html.j2")
        .render(
            **context,
            rendered_tables=[render_table(table, _number(table.name)) for table in built],
            plan=read_plan(plan) if plan is not None else None,
            runs=run_states(loaded, root),
            not_run_status=NOT_RUN_AT_SCALE,
        )
    )
    atomic_write_text(output, page)
    summaries: list[TableSummary] = context["summaries"]
    return summaries


@dataclass
class Plan:
    """The workflow's plan.tsv: its comment lines (what the numbers are) and its table."""

    comments: list[str]
    columns: list[str]
    rows: list[list[str]]


def read_plan(path: str | os.PathLike) -> Plan:
    """Read a plan.tsv (``#`` comment lines, then a tab-separated table with a header)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    comments = [line.lstrip("# ").rstrip() for line in lines if line.startswith("#")]
    table = [line.split("\t") for line in lines if line and not line.startswith("#")]
    if not table:
        raise ValueError(f"{path}: no table (expected a header line after the comments)")
    return Plan(comments, table[0], table[1:])


@dataclass
class RunStates:
    """Per target, its runs by state, and every run that gave no number (each once, with its targets)."""

    targets: list[dict[str, Any]]
    problems: list[dict[str, Any]]


def run_states(loaded: dict[str, Manifest], root: str | os.PathLike | None = None) -> RunStates:
    """How many runs of each target completed, diverged, were interrupted or are missing, the rows the
    scale does not run, and the runs without a number (their directory relative to ``root``)."""
    base = Path(root) if root is not None else Path.cwd()
    targets = []
    problems: dict[Path, dict[str, Any]] = {}
    for name, manifest in loaded.items():
        counts = {status.value: 0 for status in Status}
        for run in manifest.runs:
            counts[run.status] += 1
            if run.status != Status.COMPLETED:
                entry = problems.setdefault(run.run_dir, _problem(run, base))
                entry["targets"].append(name)
        targets.append({"name": name, "runs": len(manifest.runs), "not_run": len(manifest.not_run), **counts})
    return RunStates(targets, sorted(problems.values(), key=lambda p: (p["status"], p["run_dir"])))


def _problem(run: Run, base: Path) -> dict[str, Any]:
    diverged = run.result["diverged"] if run.result is not None else None
    why = f"epoch {diverged['epoch']}: {diverged['reason']}" if diverged else ""
    try:
        shown_dir = str(run.run_dir.relative_to(base))
    except ValueError:
        shown_dir = str(run.run_dir)
    key = ", ".join(f"{k} {v}" for k, v in run.key.items())
    return {"status": run.status, "run_dir": shown_dir, "key": key, "why": why, "targets": []}


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


def _scale_rows(scales: Mapping[str, Mapping[str, Any]] | None, used: set[str]) -> list[dict[str, Any]]:
    """One row per scale (config/scales.yaml as the workflow read it): what it runs, shows and costs
    (LaTeX); this report's marked."""
    if scales is None:
        return []
    rows = []
    for name, scale in scales.items():
        missing = [key for key in ("description", "shows", "cost") if key not in scale]
        if missing:
            raise ValueError(f"scales: scale {name!r} lacks {', '.join(missing)}")
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


def _difference_rows(manifests: dict[str, Manifest]) -> list[dict[str, str | bool]]:
    """One entry per setting that differs from the paper's text, as the manifests state it (LaTeX),
    saying which choice the report's runs made (the default, or the variant chosen with
    ``--config variants=[...]``)."""
    declared: dict[str, dict[str, Any]] = {}
    for manifest in manifests.values():
        for item in manifest.differences:
            declared.setdefault(item["name"], item)
    rows: list[dict[str, str | bool]] = []
    for name, item in sorted(declared.items()):
        rows.append(
            {
                "name": escape(name),
                "setting": escape(item["setting"]),
                "kind": escape(_KINDS[item["kind"]]),
                "paper": escape(item["paper"]),
                "default": escape(item["default"]),
                "evidence": escape(item["evidence"]),
                "targets": ", ".join(_target_label(target) for target in item["targets"]),
                "variant": escape(item["variant_description"]),
                "used": bool(item["variant"]),
            }
        )
    return rows


def _target_label(target: str) -> str:
    kind = "Table" if target.startswith("table") else "Figure"
    return f"{kind}~{_number(target)}"


def _scales(manifests: dict[str, Manifest]) -> str:
    texts = sorted({m.scale_text for m in manifests.values()})
    return escape("; ".join(texts)) if texts else "unknown"
