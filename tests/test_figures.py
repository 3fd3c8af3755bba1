"""Figures: what each plots from the runs or from a producer's document (Figure 1), what their axes
and subtitles say, byte determinism."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from run_builders import epoch_record, write_manifest, write_producer, write_run

from fastcert.reporting.collect import Manifest, Producer, load_manifest, load_producer
from fastcert.reporting.figures import draw, save, series_labels

ROOT = Path(__file__).resolve().parents[1]
PHASES = ["eps0", "ramp", "ramp", "ramp", "target", "target"]
WIDTHS = {"Xavier (uniform)": [0.1, 1.0, 10.0], "IBP initialization": [0.1, 0.1, 0.1]}


def _widths_document(path: Path) -> Path:
    """Figure 1's producer document by hand: known widths per layer."""
    rows = [
        {"key": {"init": label, "layer": layer}, "values": {"width": width}}
        for label, widths in WIDTHS.items()
        for layer, width in enumerate(widths)
    ]
    return write_producer(path, "figure1_widths", ["figure1"], rows, batch=4)


def _settings_manifest(tmp_path: Path) -> Manifest:
    """Figure 2-style runs: two settings on one schedule, the second with two repeats, one diverged run."""
    base = {"dataset": "CIFAR-10", "model": "CNN-7", "schedule_total": 70, "schedule_phases": [1, 20, 49]}
    entries = []
    for name, setting, active in [("a", "Vanilla IBP", 0.1), ("b0", "Ours", 0.3), ("b1", "Ours", 0.5)]:
        metrics = [
            epoch_record(e, p, active=active + 0.01 * e, unstable=0.05, l_tightness=1.0 / e)
            for e, p in enumerate(PHASES, start=1)
        ]
        write_run(tmp_path / f"runs/{name}", metrics=metrics)
        entries.append(({**base, "setting": setting}, f"runs/{name}"))
    write_run(tmp_path / "runs/d", status="diverged")
    entries.append(({**base, "setting": "Vanilla IBP (w/o BN)"}, "runs/d"))
    return load_manifest(write_manifest(tmp_path / "m.json", "figure2", entries), tmp_path)


def _lines(fig, axis: int = 0) -> dict[str, list[tuple[float, float]]]:
    return {line.get_label(): [tuple(p) for p in line.get_xydata()] for line in fig.axes[axis].lines}


def test_series_labels_name_what_varies():
    from fastcert.reporting.collect import Run

    keys = [
        {"setting": "Ours", "schedule_total": 70, "schedule_phases": [1, 20, 49]},
        {"setting": "Ours", "schedule_total": 160, "schedule_phases": [1, 80, 79]},
        {"setting": "Vanilla IBP", "schedule_total": 160, "schedule_phases": [1, 80, 79]},
    ]
    runs = [Run(key, 0, Path("."), "completed") for key in keys]
    assert series_labels(runs) == [
        "Ours, schedule phases 1+20+49",
        "Ours, schedule phases 1+80+79",
        "Vanilla IBP, schedule phases 1+80+79",
    ]


def test_curves_average_repeats_and_skip_unusable_runs(tmp_path):
    fig = draw("figure2", _settings_manifest(tmp_path))
    active = _lines(fig, 0)
    assert set(active) == {"Vanilla IBP", "Ours (mean of 2)"}  # the diverged setting draws nothing
    assert active["Ours (mean of 2)"][0] == pytest.approx((1.0, 0.41))
    assert [x for x, _ in active["Vanilla IBP"]] == [1, 2, 3, 4, 5, 6]
    assert all(y == pytest.approx(0.05) for _, y in _lines(fig, 1)["Vanilla IBP"])  # the unstable panel


def test_warmup_only_figures_stop_at_the_target_phase(tmp_path):
    manifest = _settings_manifest(tmp_path)
    line = _lines(draw("figure3", manifest))["Vanilla IBP"]
    assert [x for x, _ in line] == [1, 2, 3, 4] and line[1][1] == pytest.approx(0.5)


def test_figure6_final_active_plus_unstable_against_warmup_length(tmp_path):
    entries = []
    for length, active in [(10, 0.03), (5, 0.01), (20, 0.06)]:
        metrics = [
            epoch_record(1, "ramp", active=0.5, unstable=0.5),
            epoch_record(2, "target", active=active, unstable=0.01),
        ]
        write_run(tmp_path / f"runs/w{length}", metrics=metrics)
        entries.append(({"method": "Vanilla IBP", "warmup_length": length}, f"runs/w{length}"))
    fig = draw("figure6", load_manifest(write_manifest(tmp_path / "m.json", "figure6", entries), tmp_path))
    (points,) = _lines(fig).values()
    assert [x for x, _ in points] == [5, 10, 20]
    assert [y for _, y in points] == pytest.approx([0.02, 0.04, 0.07])


def test_figure6_axis_shows_the_values_without_an_offset(tmp_path):
    """Close values (0.90001-0.90004, e.g. smoke runs) must read on the axis; by default matplotlib
    would print ticks 0.5, 1.0, ... and hide the values in an offset ("1e-5+9e-1") in the corner."""
    entries = []
    for length, active in [(5, 0.90001), (10, 0.90002), (20, 0.90004)]:
        write_run(tmp_path / f"runs/w{length}", metrics=[epoch_record(1, "target", active=active, unstable=0.0)])
        entries.append(({"method": "Vanilla IBP", "warmup_length": length}, f"runs/w{length}"))
    fig = draw("figure6", load_manifest(write_manifest(tmp_path / "m.json", "figure6", entries), tmp_path))
    axis = fig.axes[0].yaxis
    labels = axis.get_major_formatter().format_ticks(axis.get_majorticklocs())
    assert axis.get_major_formatter().get_offset() == ""
    assert all(0.8999 < float(label.replace("\u2212", "-")) < 0.9001 for label in labels), labels


def test_figure_without_completed_runs_says_so(tmp_path):
    write_run(tmp_path / "runs/d", status="diverged")
    manifest = load_manifest(write_manifest(tmp_path / "m.json", "figure7", [({"setting": "x"}, "runs/d")]), tmp_path)
    fig = draw("figure7", manifest)
    assert not fig.axes[0].lines
    assert any("no completed runs" in text.get_text() for text in fig.axes[0].texts)


def test_unknown_figure_is_an_error():
    with pytest.raises(ValueError, match="figure5"):
        draw("figure5", Manifest("figure5", "smoke", []))


def test_figure1_plots_the_log_widths_of_its_producer_document(tmp_path):
    fig = draw(
        "figure1",
        Manifest("figure1", "smoke", [], scale_note="plumbing only"),
        [load_producer(_widths_document(tmp_path / "w.json"))],
    )
    lines = _lines(fig)
    assert set(lines) == set(WIDTHS)
    for label, widths in WIDTHS.items():
        assert [x for x, _ in lines[label]] == list(range(len(widths)))
        assert [y for _, y in lines[label]] == pytest.approx([math.log(w) for w in widths])
    assert "plumbing only" not in fig.get_suptitle()  # no training: the same at every scale
    with pytest.raises(ValueError, match="one producer's document, got 0"):
        draw("figure1", Manifest("figure1", "smoke", []))
    bad = Producer("figure1_widths", "by_hand", {}, [{"key": {"init": "x"}, "values": {"width": 1.0}}])
    with pytest.raises(ValueError, match=r"rows\[0\] lacks \['layer'\]"):
        draw("figure1", Manifest("figure1", "smoke", []), [bad])


def test_figures_read_producers_without_importing_torch(tmp_path):
    """Reporting only reads: drawing Figure 1 from its document must not pull in the method code."""
    document = _widths_document(tmp_path / "w.json")
    script = (
        "import sys\n"
        "from fastcert.reporting.collect import Manifest, load_producer\n"
        "from fastcert.reporting.figures import draw, save\n"
        f"fig = draw('figure1', Manifest('figure1', 'smoke', []), [load_producer({str(document)!r})])\n"
        f"save(fig, {{'png': {str(tmp_path / 'f.png')!r}}})\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('fastcert.method')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.stdout.strip() == "[]"
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")


def test_overlapping_curves_stay_distinguishable(tmp_path):
    """Figure 7's two settings can lie on top of each other: each has its own marker and dash."""
    entries = []
    for name in ("with", "without"):
        write_run(tmp_path / f"runs/{name}", metrics=[epoch_record(e, "ramp", verified_err=0.5) for e in (1, 2, 3)])
        entries.append(({"setting": f"{name} IBP init"}, f"runs/{name}"))
    fig = draw("figure7", load_manifest(write_manifest(tmp_path / "m.json", "figure7", entries), tmp_path))
    first, second = fig.axes[0].lines
    assert first.get_xydata().tolist() == second.get_xydata().tolist()  # the same curve ...
    assert first.get_marker() != second.get_marker() and first.get_linestyle() != second.get_linestyle()


def test_subtitle_names_the_data_and_leaves_the_scales_note_to_the_caption(tmp_path):
    write_run(tmp_path / "runs/f", metrics=[epoch_record(e, "ramp") for e in (1, 2)])
    path = write_manifest(
        tmp_path / "m.json", "figure2", [({"setting": "Ours"}, "runs/f")], scale_note="Smoke scale: plumbing only."
    )
    title = draw("figure2", load_manifest(path, tmp_path)).get_suptitle()
    assert "synthetic CIFAR-10 stand-in (128 training / 64 test images)" in " ".join(title.split())
    assert "plumbing" not in title  # a paragraph: the report's caption says it (issue 20 §5)


def _render(name: str, manifest: Manifest, folder: Path, producers: list[Producer]) -> dict[str, bytes]:
    paths = {"pdf": str(folder / f"{name}.pdf"), "png": str(folder / f"{name}.png")}
    save(draw(name, manifest, producers), paths)
    return {fmt: Path(path).read_bytes() for fmt, path in paths.items()}


@pytest.mark.parametrize("name", ["figure1", "figure2"])
def test_output_is_byte_deterministic(tmp_path, name):
    manifest = _settings_manifest(tmp_path) if name == "figure2" else Manifest("figure1", "smoke", [])
    producers = [load_producer(_widths_document(tmp_path / "w.json"))] if name == "figure1" else []
    first = _render(name, manifest, tmp_path / "a", producers)
    second = _render(name, manifest, tmp_path / "b", producers)
    assert first["pdf"].startswith(b"%PDF") and first["png"].startswith(b"\x89PNG")
    assert first == second
    assert b"CreationDate" not in first["pdf"] and b"Matplotlib" not in first["png"]
