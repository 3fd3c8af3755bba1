"""Every figure at every scale keeps its text on the canvas (issue 20 §5): at the smoke scale the
subtitle's third line, the scale's note, once ran past both edges. Each text's drawn extent (titles,
labels, tick labels, legends) is compared with the figure's."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from report_builders import scale_tree

from fastcert.reporting.collect import load_manifest, load_producer
from fastcert.reporting.figures import FIGURES, draw

SCALES = ("paper", "smoke", "cpu", "demo")


def _overhang(fig) -> list[str]:
    """Where what is drawn (every text, the axes and their drawn tick labels: the figure's tight
    box) leaves the canvas, in inches (1/100 inch of slack for anti-aliasing)."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    drawn, canvas = fig.get_tightbbox(renderer), fig.bbox_inches
    sides = {
        "left": canvas.x0 - drawn.x0,
        "bottom": canvas.y0 - drawn.y0,
        "right": drawn.x1 - canvas.x1,
        "top": drawn.y1 - canvas.y1,
    }
    texts = [t.get_text()[:60] for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    return [f"{side} by {inches:.2f} in (texts: {texts})" for side, inches in sides.items() if inches > 0.01]


@pytest.mark.parametrize("scale", SCALES)
def test_every_figure_keeps_its_text_on_the_canvas(tmp_path: Path, scale: str) -> None:
    tree = scale_tree(tmp_path, scale)
    producers = [load_producer(path) for path in tree["producers"]]
    overhangs = {}
    for name in FIGURES:
        manifest = load_manifest(tree["manifests"][name], tmp_path)
        fig = draw(name, manifest, [p for p in producers if name in p.targets])
        assert fig.get_suptitle(), name  # the subtitle, where a long line once left the canvas, is checked
        overhangs[name] = _overhang(fig)
    assert overhangs == {name: [] for name in FIGURES}
