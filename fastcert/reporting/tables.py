"""One engine that renders the paper's Tables 1–10 from runs, beside the paper's own numbers.

Why it is built this way: every table is "rows identified by a few keys, a few values per row,
ours next to the paper's". The per-table differences live in :mod:`fastcert.reporting.table_layouts` as
data; this module turns (layout, the paper's rows, our observations) into a :class:`Table` whose
cells carry ours, the paper's value, the difference and whether they agree. The same cells become
the LaTeX table (booktabs, ``\\input``-able into the report) and the report's agreement summary.

Rules that keep the numbers honest:

* ours = mean ± sample std (ddof 1) over *completed* repeats; one repeat prints no ±. Diverged,
  interrupted or missing runs never contribute a number: such a cell names the reason.
* "Ours (best)" = the single completed run with the lowest verified error (at the chosen
  checkpoint, by default the authors' best checkpoint).
* a cell agrees when ``|ours − paper|`` (rounded as printed) is within the paper's ± std, or, where
  the paper prints no std, within the layout's stated tolerance. Timings are never compared.
* literature rows are the paper's quoted numbers and are marked so.
* each group header says how many epochs its runs trained at this scale, with the paper's beside it;
  a row the scale declares but does not run (the manifest's ``not_run``) says so.

Tables whose numbers need no training (Table 5) take their observations from a producer's document
(``results/producers/<name>.json``, computed by fastcert.method.analysis); this module only reads it.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fastcert.io import atomic_write_text, load_yaml
from fastcert.records import CHECKPOINTS, DEFAULT_CHECKPOINT, RESULT_FILE, Status, split_metrics
from fastcert.reporting.collect import (
    Manifest,
    Producer,
    Run,
    data_description,
    load_manifest,
    load_producer,
    shown,
)
from fastcert.reporting.latex import escape, fmt_delta, fmt_pm, render_template
from fastcert.reporting.table_layouts import LAYOUTS

# How each checkpoint was chosen, for captions: the best one is picked on the *test* set (the
# authors' train.py does the same), which a reader must know to weigh its numbers.
CHECKPOINT_TEXT = {
    "best": "best checkpoint: the epoch at the target $\\varepsilon$ with the lowest verified error on the test set, "
    "as the authors' train.py chooses it",
    "last": "last checkpoint",
}

PAPER = r"Shi et al.\ (NeurIPS 2021)"
NOT_RUN_AT_SCALE = "not run at this scale"  # the status of a row the scale's `only` filter leaves out (``not_run``)
NOTES = {  # shown instead of a number, by the reason there is none (the tables' LaTeX subset)
    "not run": "---",
    NOT_RUN_AT_SCALE: r"\textit{not run at this scale}",
    Status.DIVERGED: r"\textit{diverged}",
    Status.INTERRUPTED: r"\textit{interrupted}",
    Status.MISSING: r"\textit{missing}",
    "n/a": r"\textit{n/a}",
}


@dataclass(frozen=True)
class Observation:
    """Our values for one row key from one source (a run, or a producer's row such as Table 5's).

    ``phases``: the (ε = 0, ramp, ε = target) epochs the run trained; ``paper_phases``: the paper's
    for the same row (None where not known or not a run)."""

    key: dict[str, Any]
    status: str
    values: dict[str, float | None]
    phases: tuple[int, int, int] | None = None
    paper_phases: tuple[int, int, int] | None = None


@dataclass
class Cell:
    """One value of one row: ours beside the paper's, with the comparison."""

    metric: str
    ours: float | None
    ours_std: float | None
    note: str | None  # why there is no number of ours ("not run", "diverged", ...)
    paper: float | str | None
    paper_std: float | None
    delta: float | None = None
    tolerance: float | None = None
    tolerance_rule: str | None = None
    agree: bool | None = None


@dataclass
class Row:
    """A table row: ``kind`` is ``run`` (mean over repeats), ``best`` or ``literature`` (quoted)."""

    kind: str
    group: str
    key: dict[str, Any]
    label: list[str]
    n_text: str
    cells: list[Cell]


@dataclass
class Table:
    """A table's rows and cells; :meth:`to_latex` and :func:`fastcert.reporting.html.render_table`
    render it, the report summarizes its cells. Its text is in the LaTeX subset both renderers read."""

    name: str
    caption: str
    layout: dict[str, Any]
    rows: list[Row]
    scale: str
    data: str
    checkpoint: str
    scale_note: str | None = None

    def to_latex(self) -> str:
        """A booktabs ``table`` environment with caption and label, ready for ``\\input``."""
        return _render_latex(self)


# ---------------------------------------------------------------------------------------------
# keys and values


def normalize(value: Any) -> Any:
    """Canonical form for matching keys: lists → tuples, ``"8/255"`` → float, numbers rounded."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(normalize(item) for item in value)
    if isinstance(value, str):
        fraction = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*/\s*(\d+(?:\.\d*)?)\s*", value)
        return normalize(float(fraction[1]) / float(fraction[2])) if fraction else value.strip()
    if isinstance(value, (int, float)):
        return float(f"{float(value):.10g}")
    raise ValueError(f"cannot use {value!r} ({type(value).__name__}) as a table key")


def format_key(value: Any, labels: dict[Any, str] | None = None) -> str:
    """LaTeX for a key value: check mark / cross for flags, ``1+80+79`` for phase lists."""
    if labels and value in labels:
        return escape(labels[value])
    if isinstance(value, bool):
        return r"$\checkmark$" if value else r"$\times$"
    if value is None:
        return "---"
    if isinstance(value, (list, tuple)):
        return "+".join(format_key(item) for item in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return escape(value)


class _Formatted(dict):
    """Format-string mapping that prints ``---`` for a key the row does not have."""

    def __missing__(self, key: str) -> str:
        return "---"


def _fill(template: str, values: dict[str, Any], labels: dict[str, dict[Any, str]]) -> str:
    return template.format_map(_Formatted({k: format_key(v, labels.get(k)) for k, v in values.items()}))


def _row_id(layout: dict[str, Any], key: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(normalize(key[name]) for name in layout["match"])


# ---------------------------------------------------------------------------------------------
# our observations


def _result_entry(run: Run, name: str) -> Any:
    assert run.result is not None
    entries: Mapping[str, Any] = run.result  # a key named by a layout
    if name not in entries:
        raise ValueError(f"{run.run_dir / RESULT_FILE}: missing key {name!r}")
    return entries[name]


def extract(source: dict[str, Any], run: Run, key: dict[str, Any], checkpoint: str) -> float | None:
    """Our value for one metric of one completed run, as the layout's ``source`` says.

    ``result``: ``result.json[checkpoint][field]``; ``epoch_time``: ``result.json.epoch_time[phase]``;
    ``total_time``; ``metrics``: ``metrics.jsonl`` record of epoch ``key['epoch']`` (or the last
    epoch), ``record[split][field]``. ``percent: true`` shows a fraction in % (:func:`shown`).
    """
    kind = source["from"]
    if kind == "result":
        entry = _result_entry(run, checkpoint)
        if entry is not None and source["field"] not in entry:
            raise ValueError(f"{run.run_dir / RESULT_FILE}: {checkpoint!r} lacks {source['field']!r}")
        value = None if entry is None else entry[source["field"]]
    elif kind == "epoch_time":
        value = (_result_entry(run, "epoch_time") or {}).get(source["phase"])
    elif kind == "total_time":
        value = _result_entry(run, "total_time")
    elif kind == "metrics":
        if source["epoch"] == "last":
            record = run.metrics[-1] if run.metrics else None
        else:
            record = next((r for r in run.metrics if r["epoch"] == key["epoch"]), None)
        value = None if record is None else split_metrics(record, source["split"]).get(source["field"])
    else:
        raise ValueError(f"unknown value source {kind!r}")
    if value is None:
        return None
    value = shown(float(value), source)
    return value if math.isfinite(value) else None


def _match_key(layout: dict[str, Any], key: dict[str, Any], where: str) -> dict[str, Any]:
    """``key``'s values of the layout's match keys (aliases allowed), expansion keys excluded."""
    aliases = layout.get("aliases", {})
    matched = {}
    for name in layout["match"]:
        if name in layout.get("expand_runs", {}):
            continue
        found = next((alias for alias in (name, *aliases.get(name, ())) if alias in key), None)
        if found is None:
            raise ValueError(
                f"{where} has no key {name!r} (needed to pair it with the paper's rows); its key has {sorted(key)}"
            )
        matched[name] = key[found]
    return matched


def _expansions(layout: dict[str, Any]) -> list[dict[str, Any]]:
    expand = layout.get("expand_runs", {})
    return [dict(zip(expand, combo, strict=True)) for combo in itertools.product(*expand.values())]


def run_observations(name: str, manifest: Manifest, checkpoint: str = DEFAULT_CHECKPOINT) -> list[Observation]:
    """One observation per run (and per expanded key value, e.g. Table 6's epochs 1–4)."""
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"checkpoint must be one of {CHECKPOINTS}, got {checkpoint!r}")
    layout = LAYOUTS[name]
    observations = []
    for run in manifest.runs:
        base = _match_key(layout, run.key, f"manifest {manifest.target}: run {run.run_dir}")
        for extra in _expansions(layout):
            key = {**base, **extra}
            values = (
                {metric["name"]: extract(metric["source"], run, key, checkpoint) for metric in layout["metrics"]}
                if run.usable
                else {}
            )
            observations.append(Observation(key, run.status, values, run.phases, run.paper_phases))
    for index, declared in enumerate(manifest.not_run):
        base = _match_key(layout, declared, f"manifest {manifest.target}: not_run[{index}]")
        observations += [Observation({**base, **extra}, NOT_RUN_AT_SCALE, {}) for extra in _expansions(layout)]
    return observations


def producer_observations(name: str, producer: Producer) -> list[Observation]:
    """One observation per row of a producer's document; metric ``source``: ``{from: producer, field}``."""
    layout = LAYOUTS[name]
    observations = []
    for index, row in enumerate(producer.rows):
        where = f"producer {producer.name}: rows[{index}]"
        values = {}
        for metric in layout["metrics"]:
            source = metric["source"]
            if source["from"] != "producer":
                raise ValueError(
                    f"table {name}: metric {metric['name']!r} reads {source['from']!r}, "
                    f"but the table's observations come from a producer"
                )
            if source["field"] not in row["values"]:
                raise ValueError(f"{where}: no value {source['field']!r}; it has {sorted(row['values'])}")
            value = row["values"][source["field"]]
            values[metric["name"]] = None if value is None else shown(float(value), source)
        observations.append(Observation(_match_key(layout, row["key"], where), Status.COMPLETED, values))
    return observations


# ---------------------------------------------------------------------------------------------
# the paper's rows


def paper_rows(layout: dict[str, Any], paper_table: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """The paper's rows this layout pairs with our numbers (filtered, melted if the layout says so)."""
    source = layout.get("paper_rows", "rows")
    if source not in paper_table:
        raise ValueError(f"paper results {name}: no {source!r}")
    rows = [
        row for row in paper_table[source] if all(row.get(k) == v for k, v in layout.get("paper_filter", {}).items())
    ]
    melt = layout.get("expand_paper")
    if melt:
        rows = [
            {**row, melt["key"]: value, melt["into"]: row[melt["field"].format(value)]}
            for row in rows
            for value in melt["values"]
        ]
    for index, row in enumerate(rows):
        missing = [k for k in layout["match"] if k not in row]
        if missing:
            raise ValueError(f"paper results {name} row {index}: missing key(s) {missing}")
    return rows


def load_paper(path: str | os.PathLike) -> dict[str, Any]:
    """The paper's numbers (config/paper_results.yaml)."""
    data = load_yaml(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "tables" not in data:
        raise ValueError(f"{path}: not a paper results file (no 'tables' key)")
    return data


# ---------------------------------------------------------------------------------------------
# cells


def _aggregate(
    observations: Sequence[Observation], ids: list[tuple[Any, ...]], metrics: list[str]
) -> dict[tuple[tuple[Any, ...], str], tuple[float, float | None]]:
    """(mean, sample std or None) per (row id, metric) over completed observations with a value."""
    codes = {row_id: code for code, row_id in enumerate(dict.fromkeys(ids))}
    records = [
        {"row": codes[ids[i]], "metric": m, "value": v}
        for i, obs in enumerate(observations)
        if obs.status == Status.COMPLETED
        for m, v in obs.values.items()
        if v is not None and m in metrics
    ]
    frame = pd.DataFrame.from_records(records, columns=["row", "metric", "value"])
    stats = frame.groupby(["row", "metric"])["value"].agg(["mean", "std"])
    by_code = {code: row_id for row_id, code in codes.items()}
    return {
        (by_code[code], metric): (float(mean), None if pd.isna(std) else float(std))
        for (code, metric), (mean, std) in stats.iterrows()
    }


def _missing_note(observations: Sequence[Observation]) -> str:
    statuses = {obs.status for obs in observations}
    if not observations:
        return "not run"
    if statuses == {NOT_RUN_AT_SCALE}:
        return NOT_RUN_AT_SCALE
    if Status.COMPLETED in statuses:
        return "n/a"
    for status in (Status.DIVERGED, Status.INTERRUPTED, Status.MISSING):
        if status in statuses:
            return status
    raise AssertionError(statuses)


def _tolerance(layout: dict[str, Any], paper: float, paper_std: float | None) -> tuple[float, str]:
    """The allowed |Δ| and the band it describes (LaTeX; read "within ..." or "outside ...")."""
    if paper_std is not None:
        return float(paper_std), "the paper's $\\pm$ std"
    rule = layout.get("tolerance")
    if rule is None:
        raise ValueError("layout compares values but states no tolerance")
    if rule["kind"] == "rel":
        return rule["value"] * abs(paper), f"{rule['value'] * 100:g}\\% of the paper's value"
    return float(rule["value"]), f"$\\pm${rule['value']:g} of the paper's value (the paper prints no std)"


def tolerance_text(layout: dict[str, Any]) -> str:
    """The layout's agreement rule where the paper prints no std, in LaTeX (for the report)."""
    if not any(m.get("compare", True) and m.get("paper") for m in layout["metrics"]):
        return "not compared"
    rule = layout["tolerance"]
    return f"{rule['value'] * 100:g}\\% of paper" if rule["kind"] == "rel" else f"$\\pm${rule['value']:g}"


def _compare(cell: Cell, metric: dict[str, Any], layout: dict[str, Any]) -> Cell:
    if not metric.get("compare", True) or cell.ours is None or not isinstance(cell.paper, (int, float)):
        return cell
    digits = metric["digits"]
    cell.delta = round(cell.ours, digits) - float(cell.paper)  # as printed: Δ = shown ours − shown paper
    cell.tolerance, cell.tolerance_rule = _tolerance(layout, float(cell.paper), cell.paper_std)
    cell.agree = abs(round(cell.delta, digits)) <= cell.tolerance + 1e-9
    return cell


def _paper_cell(metric: dict[str, Any], paper: dict[str, Any] | None) -> tuple[Any, float | None]:
    if paper is None or not metric.get("paper"):
        return None, None
    std_key = metric.get("paper_std")
    return paper.get(metric["paper"]), (paper.get(std_key) if std_key else None)


def build_table(
    name: str,
    paper: dict[str, Any],
    observations: Sequence[Observation],
    *,
    scale: str,
    data: str,
    checkpoint: str = DEFAULT_CHECKPOINT,
    provenance: str | None = None,
    scale_note: str | None = None,
    differences: str = "",
) -> Table:
    """Pair our observations with the paper's rows of table ``name`` (see the module docstring)."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown table {name!r}; known: {', '.join(LAYOUTS)}")
    layout = LAYOUTS[name]
    paper_table = paper["tables"][name]
    labels = layout.get("labels", {})
    metrics = layout["metrics"]

    rows_by_id: dict[tuple[Any, ...], tuple[str, dict[str, Any], dict[str, Any] | None]] = {}
    for row in paper_rows(layout, paper_table, name):
        kind = "best" if layout.get("best") and row.get("method") == layout["best"]["label"] else "run"
        rows_by_id.setdefault(_row_id(layout, row), (kind, row, row))
    obs_ids = [_row_id(layout, obs.key) for obs in observations]
    by_id: dict[tuple[Any, ...], list[Observation]] = {}
    for row_id, obs in zip(obs_ids, observations, strict=True):
        by_id.setdefault(row_id, []).append(obs)
        rows_by_id.setdefault(row_id, ("run", obs.key, None))
    best = layout.get("best")
    if best:  # a best row for every run setting of ``of``, also where the paper prints none
        for row_id, (kind, key, _) in list(rows_by_id.items()):
            if kind == "run" and key.get("method") == best["of"] and row_id in by_id:
                best_key = {**key, "method": best["label"]}
                rows_by_id.setdefault(_row_id(layout, best_key), ("best", best_key, None))

    stats = _aggregate(observations, obs_ids, [m["name"] for m in metrics])
    # a group is its label and the paper's schedule (Table 1 has two CIFAR-10 schedules); its header
    # says how long the runs of all its rows trained
    groups = {}
    group_observations: dict[tuple[str, str | None], list[Observation]] = {}
    for row_id, (_, key, paper_row) in rows_by_id.items():
        values = {**(paper_row or {}), **key}
        groups[row_id] = (
            _fill(layout["group_label"], values, labels),
            _fill(layout["paper_epochs"], values, labels) if layout.get("paper_epochs") else None,
        )
        group_observations.setdefault(groups[row_id], []).extend(by_id.get(row_id, []))
    headers = {group: _with_epochs(*group, found) for group, found in group_observations.items()}
    rows = []
    for row_id, (kind, key, paper_row) in rows_by_id.items():
        label = [format_key(key.get(column), labels.get(column)) for column, _ in layout["columns"]]
        if kind == "best":
            assert best is not None  # best rows exist only when the layout has ``best``
            source_id = _row_id(layout, {**key, "method": best["of"]})
            cells, n_text = _best_cells(by_id.get(source_id, []), best["by"], metrics, paper_row)
        else:
            cells, n_text = _mean_cells(row_id, by_id.get(row_id, []), stats, metrics, paper_row)
        compared = [_compare(cell, metric, layout) for cell, metric in zip(cells, metrics, strict=True)]
        rows.append(Row(kind, headers[groups[row_id]], key, label, n_text, compared))
    rows.extend(_literature_rows(layout, paper_table, metrics, labels))
    caption = _caption(layout, scale, data, checkpoint, provenance, scale_note)
    if differences:
        caption = f"{caption} {differences}"
    return Table(name, caption, layout, _grouped(rows), scale, data, checkpoint, scale_note)


def _phases_text(phases: tuple[int, int, int]) -> str:
    return f"{sum(phases)} ({'+'.join(map(str, phases))})"


def _with_epochs(group: str, paper_text: str | None, observations: Sequence[Observation]) -> str:
    """The group header with the epochs its runs trained here and the paper's, e.g.
    ``MNIST: 7 (0+2+5) epochs here (paper: 70 (0+20+50))``; the paper's alone where nothing ran."""
    ran = sorted({obs.phases for obs in observations if obs.phases is not None})
    paper = sorted({obs.paper_phases for obs in observations if obs.paper_phases is not None})
    paper_text = " / ".join(map(_phases_text, paper)) if paper else paper_text
    if not ran:
        return f"{group}: {paper_text} epochs in the paper" if paper_text else group
    ran_text = " / ".join(map(_phases_text, ran))
    if ran == paper:
        return f"{group}: {ran_text} epochs, as in the paper"
    return f"{group}: {ran_text} epochs here" + (f" (paper: {paper_text})" if paper_text else "")


def _mean_cells(
    row_id: tuple[Any, ...],
    observations: list[Observation],
    stats: dict[tuple[tuple[Any, ...], str], tuple[float, float | None]],
    metrics: list[dict[str, Any]],
    paper_row: dict[str, Any] | None,
) -> tuple[list[Cell], str]:
    cells = []
    for metric in metrics:
        paper_value, paper_std = _paper_cell(metric, paper_row)
        if (row_id, metric["name"]) in stats:
            mean, std = stats[(row_id, metric["name"])]
            cells.append(Cell(metric["name"], mean, std, None, paper_value, paper_std))
        else:
            cells.append(Cell(metric["name"], None, None, _missing_note(observations), paper_value, paper_std))
    completed = sum(obs.status == Status.COMPLETED for obs in observations)
    listed = sum(obs.status != NOT_RUN_AT_SCALE for obs in observations)
    return cells, f"{completed}/{listed}" if listed else "---"


def _best_cells(
    observations: list[Observation], by: str, metrics: list[dict[str, Any]], paper_row: dict[str, Any] | None
) -> tuple[list[Cell], str]:
    candidates = [
        (score, obs)
        for obs in observations
        if obs.status == Status.COMPLETED and (score := obs.values.get(by)) is not None
    ]
    chosen = min(candidates, key=lambda pair: pair[0])[1] if candidates else None
    cells = []
    for metric in metrics:
        paper_value, paper_std = _paper_cell(metric, paper_row)
        ours = None if chosen is None else chosen.values.get(metric["name"])
        note = None if ours is not None else ("n/a" if chosen else _missing_note(observations))
        cells.append(Cell(metric["name"], ours, None, note, paper_value, paper_std))
    return cells, f"best of {len(candidates)}" if candidates else "---"


def _literature_rows(
    layout: dict[str, Any],
    paper_table: dict[str, Any],
    metrics: list[dict[str, Any]],
    labels: dict[str, dict[Any, str]],
) -> list[Row]:
    spec = layout.get("literature")
    if not spec:
        return []
    rows = []
    for row in paper_table[spec["rows"]]:
        if not all(row.get(k) == v for k, v in spec.get("filter", {}).items()):
            continue
        label = _fill(spec["label"], row, labels) + (r"$^\dagger$" if row.get("concurrent") else "")
        cells = [Cell(m["name"], None, None, None, row.get(spec["paper"].get(m["name"], "")), None) for m in metrics]
        rows.append(Row("literature", _fill(spec["group_label"], row, labels), row, [label], "", cells))
    return rows


def _grouped(rows: list[Row]) -> list[Row]:
    """Rows ordered by group (groups in order of first appearance), stable within a group."""
    order: dict[str, int] = {}
    for row in rows:
        order.setdefault(row.group, len(order))
    return sorted(rows, key=lambda row: order[row.group])


def _caption(
    layout: dict[str, Any], scale: str, data: str, checkpoint: str, provenance: str | None, scale_note: str | None
) -> str:
    parts = [f"\\textbf{{{escape(scale_note)}}}"] if scale_note else []
    parts += [
        layout["caption"],
        provenance
        or (
            f"Reproduction at scale \\texttt{{{escape(scale)}}} on {escape(data)}; "
            f"ours: mean $\\pm$ sample std over completed repeats ({CHECKPOINT_TEXT[checkpoint]}), "
            f"$n$ = completed/listed runs (diverged, interrupted or missing runs are named, "
            f"never averaged)."
        ),
        f"Paper: the values printed in {PAPER}, quoted.",
    ]
    if any(m.get("compare", True) and m.get("paper") for m in layout["metrics"]):
        parts.append(r"$\Delta$ = ours $-$ paper.")
    if layout.get("best"):
        parts.append(f"``{escape(layout['best']['label'])}'': the single run with the lowest verified error.")
    if layout.get("literature"):
        parts.append(r"Literature rows are quoted from the paper ($^\dagger$: concurrent work).")
    if layout.get("show_n", True):
        parts.append(
            r"---: no run declared for this row, or not printed in the paper; "
            r"\textit{not run at this scale}: declared, but left out at this scale."
        )
    if layout.get("notes"):
        parts.append(layout["notes"])
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# LaTeX


def _render_latex(table: Table) -> str:
    layout = table.layout
    show_n = layout.get("show_n", True)
    key_columns = len(layout["columns"]) + (1 if show_n else 0)
    widths = [metric_width(m) for m in layout["metrics"]]
    header_top = [""] * key_columns
    header = [h for _, h in layout["columns"]] + (["$n$"] if show_n else [])
    cmidrules = []
    start = key_columns + 1
    for metric, width in zip(layout["metrics"], widths, strict=True):
        header_top.append(f"\\multicolumn{{{width}}}{{c}}{{{metric['header']}}}")
        header += ["Ours", "Paper", r"$\Delta$"][:width]
        cmidrules.append(f"\\cmidrule(lr){{{start}-{start + width - 1}}}")
        start += width
    groups: list[dict[str, Any]] = []
    for row in table.rows:
        if not groups or groups[-1]["label"] != row.group:
            groups.append({"label": row.group, "lines": []})
        groups[-1]["lines"].append(_latex_line(row, layout, key_columns, widths))
    return render_template(
        "table.tex.j2",
        name=table.name,
        caption=table.caption,
        colspec="l" * len(layout["columns"]) + ("r" if show_n else "") + "r" * sum(widths),
        header_top=header_top,
        header=header,
        cmidrules="".join(cmidrules),
        groups=groups,
        ncols=key_columns + sum(widths),
    )


def metric_width(metric: dict[str, Any]) -> int:
    """Columns of one metric in every renderer: ours; ours and paper; or ours, paper and Δ."""
    if not metric.get("paper"):
        return 1
    return 3 if metric.get("compare", True) else 2


def _latex_line(row: Row, layout: dict[str, Any], key_columns: int, widths: list[int]) -> list[str]:
    if row.kind == "literature":
        line = [f"\\multicolumn{{{key_columns}}}{{l}}{{{row.label[0]}}}"]
    else:
        line = list(row.label) + ([row.n_text] if layout.get("show_n", True) else [])
    for cell, metric, width in zip(row.cells, layout["metrics"], widths, strict=True):
        digits = metric["digits"]
        if row.kind == "literature":
            ours = ""
        elif cell.ours is None:
            ours = NOTES[cell.note or "n/a"]
        else:
            ours = fmt_pm(cell.ours, cell.ours_std, digits)
        if cell.paper is None:
            paper = "---"
        elif isinstance(cell.paper, str):
            paper = escape(cell.paper)
        else:
            paper = fmt_pm(float(cell.paper), cell.paper_std, digits)
        delta = "" if cell.delta is None else fmt_delta(cell.delta, digits)
        line += [ours, paper, delta][:width]
    return line


# ---------------------------------------------------------------------------------------------
# one call per target


def build_target(
    name: str,
    paper: dict[str, Any],
    manifest: Manifest,
    *,
    checkpoint: str = DEFAULT_CHECKPOINT,
    producers: Sequence[Producer] = (),
) -> Table:
    """Table ``name`` from its manifest's runs or, where its layout says ``observations: producer``,
    from the one producer document it is given (its manifest then lists no runs)."""
    if name not in LAYOUTS:
        raise ValueError(f"unknown table {name!r}; known: {', '.join(LAYOUTS)}")
    if LAYOUTS[name].get("observations", "runs") == "producer":
        if len(producers) != 1:
            raise ValueError(
                f"table {name} reads one producer's document (config/producers.yaml lists it "
                f"'for: [{name}]'), got {len(producers)}"
            )
        (producer,) = producers
        provenance = (
            f"Scale \\texttt{{{escape(manifest.scale_text)}}}: computed without data or training by "
            f"\\texttt{{{escape('fastcert.method.analysis.' + producer.function)}}} "
            f"(producer \\texttt{{{escape(producer.name)}}}: {escape(producer.settings_text)}), "
            f"so identical at every scale."
        )
        return build_table(
            name,
            paper,
            producer_observations(name, producer),
            scale=manifest.scale_text,
            data="no data",
            checkpoint=checkpoint,
            provenance=provenance,
        )
    return build_table(
        name,
        paper,
        run_observations(name, manifest, checkpoint),
        scale=manifest.scale_text,
        data=data_description(manifest.runs),
        checkpoint=checkpoint,
        scale_note=manifest.scale_note,
        differences=manifest.differences_text(),
    )


def render_target(
    name: str,
    *,
    paper_path: str | os.PathLike,
    manifest_path: str | os.PathLike,
    tex_path: str | os.PathLike,
    checkpoint: str = DEFAULT_CHECKPOINT,
    root: str | os.PathLike | None = None,
    producer_paths: Sequence[str | os.PathLike] = (),
) -> Table:
    """Build table ``name`` (see :func:`build_target`) and write its LaTeX atomically."""
    table = build_target(
        name,
        load_paper(paper_path),
        load_manifest(manifest_path, root),
        checkpoint=checkpoint,
        producers=[load_producer(path) for path in producer_paths],
    )
    atomic_write_text(tex_path, table.to_latex())
    return table
