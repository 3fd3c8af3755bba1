"""The report as one self-contained HTML page (issue 20): every table from the same Table objects as the
LaTeX, figures embedded, nothing fetched from elsewhere, the tables' LaTeX subset turned into HTML."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_pages import body_rows, build_page

from fastcert.reporting.figures import FIGURES
from fastcert.reporting.html import tex_to_html
from fastcert.reporting.table_layouts import LAYOUTS


class _Page(HTMLParser):
    """Tables (id → body rows), images' sources, links and every tag, from the page's HTML."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.tables: dict[str, int] = {}
        self.sources: list[str] = []
        self.references: list[str] = []
        self.text: list[str] = []
        self._table: list[str] = []
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.append(tag)
        if tag == "table":
            self._table.append(found.get("id") or "")
            self.tables[self._table[-1]] = 0
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.tables[self._table[-1]] += 1
        elif tag == "img":
            self.sources.append(found.get("src") or "")
        for name in ("href", "src", "action", "poster"):
            if found.get(name):
                self.references.append(str(found[name]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    built = build_page(tmp_path_factory.mktemp("smoke"), "smoke")
    parser = _Page()
    parser.feed(built["page"].read_text(encoding="utf-8"))
    return {**built, "parsed": parser}


def test_every_table_with_every_row_and_every_figure_embedded(smoke: dict) -> None:
    parsed = smoke["parsed"]
    assert {name: parsed.tables.get(name) for name in smoke["tables"]} == {
        name: body_rows(table) for name, table in smoke["tables"].items()
    }
    assert len(smoke["tables"]) == len(LAYOUTS)
    assert len(parsed.sources) == len(FIGURES)
    assert all(src.startswith("data:image/png;base64,iVBOR") for src in parsed.sources)


def test_the_page_needs_nothing_else(smoke: dict) -> None:
    parsed = smoke["parsed"]
    assert not {"script", "link", "iframe", "object", "embed"} & set(parsed.tags)
    # only the page's own anchors and the embedded figures: nothing to fetch, on any machine
    assert all(ref.startswith(("#", "data:")) for ref in parsed.references), parsed.references
    assert "url(" not in smoke["page"].read_text(encoding="utf-8")


def test_no_latex_reaches_the_page(smoke: dict) -> None:
    text = "".join(smoke["parsed"].text)
    leftovers = re.findall(r"\\[A-Za-z]+|\$|\\\\", text)
    assert leftovers == []
    assert "ε" in text and "ℒ" in text and "±" in text


def test_what_the_page_says_beside_the_tables(smoke: dict) -> None:
    text = " ".join(" ".join(smoke["parsed"].text).split())
    assert "Smoke scale: these numbers test the plumbing only" in text  # the note, boxed
    assert "Settings that differ from the paper" in text and "Initialization of the Wide-ResNet baselines" in text
    assert "Where the reproduction agrees with the paper" in text and "cells outside the tolerance" in text
    assert "plan at scale 'smoke': by hand" in text  # the plan
    # every seventh made-up run diverged: each is listed with its reason, once
    diverged = re.findall(r"diverged runs/(\S+) ", text)
    assert diverged and len(diverged) == len(set(diverged))
    assert "epoch 2: non-finite loss" in text
    assert "not run at this scale" in text


def test_cells_outside_the_tolerance_are_marked_in_words_and_symbols(smoke: dict) -> None:
    html = smoke["page"].read_text(encoding="utf-8")
    table1 = smoke["tables"]["table1"]
    outside = sum(1 for row in table1.rows for cell in row.cells if cell.agree is False)
    section = html[html.index('<table id="table1">') : html.index("</table>", html.index('<table id="table1">'))]
    marked = section.count('✗</span><span class="sr"> (outside the paper&#39;s ± std or the stated tolerance)')
    assert outside > 0 and marked == outside
    assert section.count('scope="row"') >= len(table1.rows) and "<caption>" in section
    assert "Standard (%)" in section and "Verified (%)" in section  # units in the headers


@pytest.mark.parametrize(
    ("tex", "html"),
    [
        (r"error (\%) at $\varepsilon_t=8/255$", "error (%) at ε<sub><i>t</i></sub>=8/255"),
        (r"$\mathcal{L}_{\mathrm{tightness}}$", "ℒ<sub>tightness</sub>"),
        (r"$\log(\hat{E}(\Delta_m))$", "log(<i>E\u0302</i>(Δ<sub><i>m</i></sub>))"),
        (
            r"\textit{not run at this scale} --- ``Ours'' a\_b \texttt{-{}-config}",
            "<i>not run at this scale</i> — “Ours” a_b <code>--config</code>",
        ),
        (r"Table~1 $\sqrt{6n}/4$ $10^{-6}$", "Table\u00a01 √(6<i>n</i>)/4 10<sup>−6</sup>"),
        ("<b> & é", "&lt;b&gt; &amp; é"),
    ],
)
def test_the_tables_latex_subset_in_html(tex: str, html: str) -> None:
    assert str(tex_to_html(tex)) == html


@pytest.mark.parametrize("tex", [r"\unknowncommand{x}", r"$x", r"{open", r"a_b", r"$\mathcal{Q}$"])
def test_markup_it_cannot_show_is_an_error_naming_it(tex: str) -> None:
    with pytest.raises(ValueError, match="cannot show"):
        tex_to_html(tex)


def test_the_demo_page_needs_no_training_beyond_table1(tmp_path: Path) -> None:
    """At the demo scale only Table 1's MNIST CNN-7 rows run; every other table and figure is on the page anyway."""
    built = build_page(tmp_path, "demo")
    parsed = _Page()
    parsed.feed(built["page"].read_text(encoding="utf-8"))
    assert {name: parsed.tables.get(name) for name in built["tables"]} == {
        name: body_rows(table) for name, table in built["tables"].items()
    }
    assert len(parsed.sources) == len(FIGURES)
