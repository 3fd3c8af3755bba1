"""The report page as a person sees it (issue 20 §4): rendered by headless Chromium from the file alone,
every table there with the right number of rows, every figure loaded, no console error, no request
leaving the file; a screenshot is kept.

Without Chromium the test skips with the install line, except under CI=true, where it fails
(``@pytest.mark.chromium``, tests/conftest.py).
``FASTCERT_REPORT_SCREENSHOT=docs/report.png`` also writes the screenshot README shows (of Table 1),
from the page ``FASTCERT_REPORT_PAGE`` names (e.g. reports/demo/report.html after README's first
command) or, without it, from this test's demo-scale page.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from chromium import view
from report_pages import body_rows, build_page

from fastcert.reporting.figures import FIGURES

FACTS = """({
  tables: Object.fromEntries([...document.querySelectorAll('table')].map(
    t => [t.id, [...t.tBodies].reduce((n, body) => n + body.rows.length, 0)])),
  captions: [...document.querySelectorAll('table')].filter(t => !t.caption || !t.caption.textContent.trim()).length,
  figures: [...document.images].map(i => ({id: i.closest('figure').id, width: i.naturalWidth, done: i.complete})),
  visibleWidth: document.documentElement.scrollWidth,
  title: document.title,
})"""


def _check(page: Path, expected_rows: dict[str, int] | None, tmp_path: Path, shot_at: str = "table1") -> bytes:
    seen = view(page, FACTS, shot_at=shot_at)
    facts = seen.facts
    if expected_rows is not None:
        assert {name: facts["tables"].get(name) for name in expected_rows} == expected_rows
    assert all(facts["tables"][f"table{n}"] > 0 for n in range(1, 11))
    assert facts["captions"] == 0  # every table says what it is
    assert sorted(figure["id"] for figure in facts["figures"]) == sorted(FIGURES)
    assert all(figure["done"] and figure["width"] > 0 for figure in facts["figures"]), facts["figures"]
    assert seen.console_errors == []
    page_uri = page.resolve().as_uri()
    assert [url for url in seen.requests if url != page_uri and not url.startswith("data:")] == []
    assert "Reproduction report" in facts["title"]
    assert seen.screenshot.startswith(b"\x89PNG")
    (tmp_path / "screenshot.png").write_bytes(seen.screenshot)
    return seen.screenshot


@pytest.mark.chromium
def test_the_report_page_in_chromium(tmp_path: Path) -> None:
    built = build_page(tmp_path / "smoke", "smoke")
    copied = tmp_path / "elsewhere" / "report.html"  # the page alone, moved to another folder
    copied.parent.mkdir()
    shutil.copyfile(built["page"], copied)
    shutil.rmtree(tmp_path / "smoke")
    _check(copied, {name: body_rows(table) for name, table in built["tables"].items()}, tmp_path)


@pytest.mark.chromium
@pytest.mark.skipif(
    not os.environ.get("FASTCERT_REPORT_SCREENSHOT"), reason="set FASTCERT_REPORT_SCREENSHOT=docs/report.png"
)
def test_readme_screenshot(tmp_path: Path) -> None:
    named = os.environ.get("FASTCERT_REPORT_PAGE")
    page = Path(named) if named else build_page(tmp_path / "demo", "demo")["page"]
    Path(os.environ["FASTCERT_REPORT_SCREENSHOT"]).write_bytes(_check(page, None, tmp_path))
