"""The paper's Figures 1–4, 6 and 7, regenerated with matplotlib as PDF and PNG, byte-deterministic.

Why it is built this way: each figure is a small declarative entry in :data:`FIGURES` (what to
plot from which per-epoch metric) drawn by one of three painters: ``producer`` (Figure 1: rows of a
producer's document, ``results/producers/<name>.json``, computed at initialization without training
by fastcert.method.analysis; this module only reads them), ``curves`` (a metric of ``metrics.jsonl``
against the epoch, one line per run setting: Figures 2, 3, 4, 7) and ``versus`` (a final-epoch value
against a run key: Figure 6). Figures are drawn on a bare :class:`matplotlib.figure.Figure` (no pyplot state, no
global backend switch) under fixed rcParams, and saved without dates or software versions, so the
same inputs give the same bytes.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import matplotlib
from matplotlib.figure import Figure
from matplotlib.rcsetup import cycler
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from fastcert.io import atomic_write_bytes
from fastcert.records import Phase, split_metrics
from fastcert.reporting.collect import Manifest, Producer, Run, data_description, shown

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

RC_PARAMS: dict[RcKeyType, Any] = {
    "font.family": "DejaVu Sans",
    "font.size": 8.0,
    "axes.titlesize": 8.0,
    "axes.labelsize": 8.0,
    "legend.fontsize": 6.5,
    "lines.linewidth": 1.4,
    "lines.markersize": 4.0,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "figure.dpi": 100.0,
    "savefig.dpi": 150.0,
    "pdf.fonttype": 42,
    "pdf.compression": 6,
    "svg.hashsalt": "fastcert",
    "axes.prop_cycle": cycler(color=list(matplotlib.color_sequences["tab10"])),
}
# Without these, savefig writes the creation date and the matplotlib version into the file.
METADATA = {
    "pdf": {"CreationDate": None, "ModDate": None, "Creator": None, "Producer": None},
    "png": {"Software": None},
}

FIGURES: dict[str, dict[str, Any]] = {
    "figure1": {
        "kind": "producer",
        "title": r"Bound width per layer at initialization",
        "caption": r"$\log \hat{E}(\Delta_i)$ of every layer $i$ (0 = input; the classifier omitted) of an "
        r"untrained CNN-7 without BN on CIFAR-10-shaped random images at $\varepsilon = 8/255$, "
        r"for each initialization (one IBP pass; producer \texttt{figure1\_widths} of "
        r"\texttt{config/producers.yaml}).",
        "paper": "The paper shows the bound width growing steeply with depth under Xavier initialization "
        "(certified bounds explode at initialization); IBP initialization keeps it stable.",
        # one line per value of the row key ``series``: ``x`` (a row key) against log of value ``y``
        "series": "init",
        "x": "layer",
        "y": "width",
    },
    "figure2": {
        "kind": "curves",
        "title": "ReLU neuron states during training (train set)",
        "caption": r"Ratios of active and unstable ReLU neurons (train-set mean per epoch, mean over "
        r"layers) of CNN-7 on CIFAR-10, 70-epoch schedule (1+20+49: the setting inferred from "
        r"App. B.5, see ``Settings that differ from the paper''); the vanilla settings are not "
        r"regularized and ``w/o BN'' has no BN.",
        "paper": "The paper shows Vanilla IBP without BN ending with very few active or unstable neurons "
        "(most are inactive), more so with the shorter warmup; full BN and the regularizers "
        "keep more neurons active.",
        "panels": [
            {"split": "train", "field": "active", "label": "Active ReLU neurons"},
            {"split": "train", "field": "unstable", "label": "Unstable ReLU neurons"},
        ],
    },
    "figure3": {
        "kind": "curves",
        "title": r"$\mathcal{L}_{\mathrm{tightness}}$ during warmup (train set)",
        "caption": r"$\mathcal{L}_{\mathrm{tightness}}$ during warmup (train-set mean per epoch), CNN-7 on "
        r"CIFAR-10; it is optimized only by the settings with regularizers, and only plotted "
        r"for the others.",
        "paper": "The paper shows L_tightness descending faster with the regularizers, and faster still "
        "early on with IBP initialization; Vanilla IBP without BN ends high.",
        "panels": [{"split": "train", "field": "l_tightness", "label": r"$\mathcal{L}_{\mathrm{tightness}}$"}],
        "warmup_only": True,
    },
    "figure4": {
        "kind": "curves",
        "title": r"$\mathcal{L}_{\mathrm{relu}}$ during warmup (train set)",
        "caption": r"$\mathcal{L}_{\mathrm{relu}}$ during warmup (train-set mean per epoch), same runs as "
        r"Figure 3.",
        "paper": "The paper shows L_relu kept under control when it is optimized and growing otherwise, "
        "extremely large for Vanilla IBP without BN in later epochs.",
        "panels": [{"split": "train", "field": "l_relu", "label": r"$\mathcal{L}_{\mathrm{relu}}$"}],
        "warmup_only": True,
    },
    "figure6": {
        "kind": "versus",
        "title": "Active and unstable ReLU neurons against warmup length",
        "caption": r"Ratio of active plus unstable ReLU neurons (train set, final epoch, mean over layers) "
        r"of CNN-7 without BN trained with Vanilla IBP on CIFAR-10, against the warmup (ramp) "
        r"length (no BN: Sec.~3.2.2, see ``Settings that differ from the paper'').",
        "paper": "The paper's axis spans 0.00-0.08: fewer active and unstable neurons (more inactive ones) "
        "with shorter warmup.",
        "x": {"key": "warmup_length", "label": "Warmup length (epochs)"},
        "y": {"split": "train", "fields": ["active", "unstable"], "label": "Active & unstable ReLU neurons"},
    },
    "figure7": {
        "kind": "curves",
        "title": "Training verified error, ResNeXt on TinyImageNet",
        "caption": r"Training verified error (\%, train-set mean per epoch) of ResNeXt on TinyImageNet with "
        r"and without IBP initialization; it can rise during warmup as $\varepsilon$ grows.",
        "paper": "The paper shows IBP initialization reaching lower verified errors, especially in early epochs.",
        "panels": [
            {"split": "train", "field": "verified_err", "label": "Training verified error (%)", "percent": True}
        ],
    },
}


# ---------------------------------------------------------------------------------------------
# series from runs


def _format(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(_format(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def series_labels(runs: Sequence[Run]) -> list[str]:
    """A legend label per run: its ``setting`` (if any) plus every other key that varies across runs."""
    keys = [run.key for run in runs]
    names = list(dict.fromkeys(name for key in keys for name in key))
    varying = [n for n in names if n != "setting" and len({repr(k.get(n)) for k in keys}) > 1]
    if "schedule_phases" in varying and "schedule_total" in varying:
        varying.remove("schedule_total")  # the phases name the schedule; the total would repeat it
    labels = []
    for key in keys:
        parts = [str(key["setting"])] if "setting" in key else []
        parts += [f"{n.replace('_', ' ')} {_format(key.get(n))}" for n in varying]
        labels.append(", ".join(parts) or "run")
    return labels


def _series(manifest: Manifest) -> dict[str, list[Run]]:
    """Completed runs grouped by legend label, in manifest order (repeats of a setting share one)."""
    runs = [run for run in manifest.runs if run.usable]
    grouped: dict[str, list[Run]] = {}
    for label, run in zip(series_labels(runs), runs, strict=True):
        grouped.setdefault(label, []).append(run)
    return grouped


def _curve(runs: list[Run], panel: dict[str, Any], warmup_only: bool) -> tuple[list[int], list[float]]:
    """Mean over repeats of ``record[split][field]`` per epoch (epochs every repeat has)."""
    per_epoch: dict[int, list[float]] = {}
    for run in runs:
        for record in run.metrics:
            if warmup_only and record.get("phase") == Phase.TARGET:
                continue
            value = split_metrics(record, panel["split"]).get(panel["field"])
            if value is not None and math.isfinite(value):
                per_epoch.setdefault(int(record["epoch"]), []).append(shown(value, panel))
    epochs = sorted(e for e, values in per_epoch.items() if len(values) == len(runs))
    return epochs, [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs]


def _x_value(run: Run, key: str) -> float:
    """Figure 6's x: the run key ``key``, else the ramp length of ``schedule_phases``."""
    if key in run.key:
        return float(run.key[key])
    if "schedule_phases" in run.key:
        return float(run.key["schedule_phases"][1])
    raise ValueError(f"run {run.run_dir}: key has neither {key!r} nor 'schedule_phases' ({sorted(run.key)})")


# ---------------------------------------------------------------------------------------------
# painters


def _no_data(ax: Any, why: str) -> None:
    ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="0.4")


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
_DASHES = ("-", "--", "-.", ":")


def _style(index: int, points: int) -> dict[str, Any]:
    """Colour, marker and dash of series ``index``: curves that lie on top of each other stay
    distinguishable (a marker every few points on long curves, so markers do not merge into a band)."""
    return {
        "color": f"C{index % 10}",
        "marker": _MARKERS[index % len(_MARKERS)],
        "linestyle": _DASHES[index % len(_DASHES)],
        "markevery": max(1, points // 12),
        "markerfacecolor": "none" if index % 2 else None,
    }


def _paint_curves(fig: Figure, spec: dict[str, Any], manifest: Manifest, producers: Sequence[Producer]) -> None:
    series = _series(manifest)
    axes = fig.subplots(1, len(spec["panels"]), squeeze=False)[0]
    legend: dict[str, Any] = {}
    for ax, panel in zip(axes, spec["panels"], strict=True):
        for index, (label, runs) in enumerate(series.items()):
            epochs, values = _curve(runs, panel, spec.get("warmup_only", False))
            if epochs:
                suffix = f" (mean of {len(runs)})" if len(runs) > 1 else ""
                # one style per series across panels
                (line,) = ax.plot(epochs, values, label=label + suffix, **_style(index, len(epochs)))
                legend.setdefault(line.get_label(), line)
        ax.set_xlabel("Epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(panel["label"])
        if not ax.lines:
            _no_data(ax, "no completed runs with this metric")
    if legend:  # below the panels, so that it never hides a curve
        fig.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=min(2, len(legend)))


def _paint_versus(fig: Figure, spec: dict[str, Any], manifest: Manifest, producers: Sequence[Producer]) -> None:
    ax = fig.subplots()
    y = spec["y"]
    points: dict[float, list[float]] = {}
    for run in manifest.runs:
        if not run.usable or not run.metrics:
            continue
        record = split_metrics(run.metrics[-1], y["split"])
        values = [value for field in y["fields"] if (value := record.get(field)) is not None]
        if len(values) == len(y["fields"]):
            points.setdefault(_x_value(run, spec["x"]["key"]), []).append(sum(values))
    xs = sorted(points)
    if xs:
        ax.plot(xs, [sum(points[x]) / len(points[x]) for x in xs], marker="o")
    else:
        _no_data(ax, "no completed runs")
    ax.set_xlabel(spec["x"]["label"])
    ax.set_ylabel(y["label"])
    # the values themselves on the axis: an offset ("+6.2e-2" in a corner) would hide them
    ax.yaxis.set_major_formatter(ScalarFormatter(useOffset=False))


def producer_series(spec: dict[str, Any], producer: Producer) -> dict[str, tuple[list[float], list[float]]]:
    """``{series label: (xs, ys)}`` from a producer's rows, in row order (``spec``: series, x, y)."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for index, row in enumerate(producer.rows):
        missing = [k for k in (spec["series"], spec["x"]) if k not in row["key"]]
        if missing or spec["y"] not in row["values"]:
            raise ValueError(f"producer {producer.name}: rows[{index}] lacks {missing or [spec['y']]}")
        xs, ys = series.setdefault(str(row["key"][spec["series"]]), ([], []))
        xs.append(float(row["key"][spec["x"]]))
        ys.append(float(row["values"][spec["y"]]))
    return series


def _paint_producer(fig: Figure, spec: dict[str, Any], manifest: Manifest, producers: Sequence[Producer]) -> None:
    del manifest  # computed at initialization: no runs
    if len(producers) != 1:
        raise ValueError(f"figure {spec['title']!r} reads one producer's document, got {len(producers)}")
    ax = fig.subplots()
    for index, (label, (xs, ys)) in enumerate(producer_series(spec, producers[0]).items()):
        ax.plot(xs, [math.log(y) for y in ys], label=label, **_style(index, len(xs)))
    ax.set_xlabel("Layer $i$ (0 = input)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(r"$\log \hat{E}(\Delta_i)$")
    ax.legend(loc="best")


_PAINTERS = {"producer": _paint_producer, "curves": _paint_curves, "versus": _paint_versus}


# ---------------------------------------------------------------------------------------------
# entry points


def provenance(name: str, manifest: Manifest) -> str:
    """Which scale and which data made figure ``name`` (for its subtitle and the report's caption)."""
    if FIGURES[name]["kind"] == "producer":
        return f"scale {manifest.scale}: random images at initialization (no data, no training; same at every scale)"
    return f"scale {manifest.scale}: {data_description(manifest.runs)}"


def scale_note(name: str, manifest: Manifest) -> str | None:
    """The scale's note (e.g. that smoke numbers test plumbing only), for figures made from runs."""
    return None if FIGURES[name]["kind"] == "producer" else manifest.scale_note


def draw(name: str, manifest: Manifest, producers: Sequence[Producer] = ()) -> Figure:
    """Figure ``name`` drawn from ``manifest``'s runs, or from ``producers`` (Figure 1: no training).

    The subtitle says what and which data; the scale's note (:func:`scale_note`) is a paragraph and
    belongs in the caption beside the figure, not in the image, where a long line would be cut."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; known: {', '.join(FIGURES)}")
    spec = FIGURES[name]
    panels = len(spec.get("panels", [None]))
    with matplotlib.rc_context(RC_PARAMS):
        fig = Figure(figsize=(3.6 * panels + 0.6, 3.8), layout="constrained")
        _PAINTERS[spec["kind"]](fig, spec, manifest, producers)
        fig.suptitle(_wrapped([spec["title"], provenance(name, manifest)], fig, SUBTITLE_SIZE), fontsize=SUBTITLE_SIZE)
    return fig


SUBTITLE_SIZE = 7.5  # points
_EM_PER_CHARACTER = 0.62  # DejaVu Sans at its widest lower-case average, so wrapped lines always fit


def _wrapped(lines: list[str], fig: Figure, size: float) -> str:
    """``lines`` joined by newlines, each wrapped to the figure's width at font size ``size``."""
    columns = int(fig.get_figwidth() * 72 / (size * _EM_PER_CHARACTER)) - 2
    return "\n".join(wrapped for line in lines for wrapped in textwrap.wrap(line, columns) or [""])


def save(fig: Figure, paths: dict[str, str]) -> None:
    """Write ``fig`` in each format of ``paths`` (``{"pdf": ..., "png": ...}``) atomically, without dates."""
    with matplotlib.rc_context(RC_PARAMS):
        for fmt, path in paths.items():
            if fmt not in METADATA:
                raise ValueError(f"unsupported figure format {fmt!r}; use one of {', '.join(METADATA)}")
            buffer = io.BytesIO()
            fig.savefig(buffer, format=fmt, metadata=METADATA[fmt])
            atomic_write_bytes(path, buffer.getvalue())
