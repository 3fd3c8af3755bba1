"""Figures: what each plots from the runs, Figure 1's bound explosion at init, byte determinism."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from run_builders import epoch_record, write_manifest, write_run

from fastcert.reporting.collect import Manifest, load_manifest
from fastcert.reporting.figures import FIGURES, draw, init_widths, save, series_labels

PHASES = ["eps0", "ramp", "ramp", "ramp", "target", "target"]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Figure 1's IBP passes are small: one thread avoids oversubscription on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_figure1(monkeypatch):
    """Figure 1 on a 1/8-width CNN-7 and 4 images: the same computation, fast enough for a test."""
    spec = copy.deepcopy(FIGURES["figure1"])
    spec["model"]["width"] = 0.125
    spec["batch"] = 4
    monkeypatch.setitem(FIGURES, "figure1", spec)
    return spec


def _settings_manifest(tmp_path: Path) -> Manifest:
    """Figure 2-style runs: two settings on one schedule, the second with two repeats, one diverged run."""
    base = {"dataset": "CIFAR-10", "model": "CNN-7", "schedule_total": 70, "schedule_phases": [1, 20, 49]}
    entries = []
    for name, setting, active in [("a", "Vanilla IBP", 0.1), ("b0", "Ours", 0.3), ("b1", "Ours", 0.5)]:
        metrics = [epoch_record(e, p, active=active + 0.01 * e, unstable=0.05, l_tightness=1.0 / e)
                   for e, p in enumerate(PHASES, start=1)]
        write_run(tmp_path / f"runs/{name}", metrics=metrics)
        entries.append(({**base, "setting": setting}, f"runs/{name}"))
    write_run(tmp_path / "runs/d", status="diverged")
    entries.append(({**base, "setting": "Vanilla IBP (w/o BN)"}, "runs/d"))
    return load_manifest(write_manifest(tmp_path / "m.json", "figure2", entries), tmp_path)


def _lines(fig, axis: int = 0) -> dict[str, list[tuple[float, float]]]:
    return {line.get_label(): [tuple(p) for p in line.get_xydata()] for line in fig.axes[axis].lines}


def test_series_labels_name_what_varies():
    from fastcert.reporting.collect import Run

    keys = [{"setting": "Ours", "schedule_total": 70, "schedule_phases": [1, 20, 49]},
            {"setting": "Ours", "schedule_total": 160, "schedule_phases": [1, 80, 79]},
            {"setting": "Vanilla IBP", "schedule_total": 160, "schedule_phases": [1, 80, 79]}]
    runs = [Run(key, 0, Path("."), "completed") for key in keys]
    assert series_labels(runs) == ["Ours, schedule phases 1+20+49", "Ours, schedule phases 1+80+79",
                                   "Vanilla IBP, schedule phases 1+80+79"]


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
        metrics = [epoch_record(1, "ramp", active=0.5, unstable=0.5), epoch_record(2, "target", active=active,
                                                                                   unstable=0.01)]
        write_run(tmp_path / f"runs/w{length}", metrics=metrics)
        entries.append(({"method": "Vanilla IBP", "warmup_length": length}, f"runs/w{length}"))
    fig = draw("figure6", load_manifest(write_manifest(tmp_path / "m.json", "figure6", entries), tmp_path))
    (points,) = _lines(fig).values()
    assert [x for x, _ in points] == [5, 10, 20]
    assert [y for _, y in points] == pytest.approx([0.02, 0.04, 0.07])


def test_figure_without_completed_runs_says_so(tmp_path):
    write_run(tmp_path / "runs/d", status="diverged")
    manifest = load_manifest(write_manifest(tmp_path / "m.json", "figure7", [({"setting": "x"}, "runs/d")]),
                             tmp_path)
    fig = draw("figure7", manifest)
    assert not fig.axes[0].lines
    assert any("no completed runs" in text.get_text() for text in fig.axes[0].texts)


def test_unknown_figure_is_an_error():
    with pytest.raises(ValueError, match="figure5"):
        draw("figure5", Manifest("figure5", "smoke", []))


def test_figure1_bounds_explode_except_with_ibp_init(small_figure1):
    widths = init_widths(small_figure1)
    assert len({w[0] for w in widths.values()}) == 1  # the same input box for every scheme
    assert all(len(w) == 7 for w in widths.values())  # input + 5 conv ReLUs + the hidden FC ReLU
    growth = {label: math.log(w[-1] / w[0]) for label, w in widths.items()}
    assert abs(growth["IBP initialization"]) < 1.0
    for label in ("Xavier (uniform)", "Xavier (Gaussian)", "Kaiming (uniform)", "Kaiming (Gaussian)", "Orthogonal"):
        assert growth[label] > 5.0, (label, growth[label])


def _render(name: str, manifest: Manifest, folder: Path) -> dict[str, bytes]:
    paths = {"pdf": str(folder / f"{name}.pdf"), "png": str(folder / f"{name}.png")}
    save(draw(name, manifest), paths)
    return {fmt: Path(path).read_bytes() for fmt, path in paths.items()}


@pytest.mark.parametrize("name", ["figure1", "figure2"])
def test_output_is_byte_deterministic(tmp_path, small_figure1, name):
    manifest = _settings_manifest(tmp_path) if name == "figure2" else Manifest("figure1", "smoke", [])
    first = _render(name, manifest, tmp_path / "a")
    second = _render(name, manifest, tmp_path / "b")
    assert first["pdf"].startswith(b"%PDF") and first["png"].startswith(b"\x89PNG")
    assert first == second
    assert b"CreationDate" not in first["pdf"] and b"Matplotlib" not in first["png"]
