"""README states facts kept elsewhere only as copies a test holds equal to their one place."""

from __future__ import annotations

from pathlib import Path

from fastcert.io import load_yaml

REPO = Path(__file__).resolve().parents[1]
BEGIN = "<!-- generated from config/scales.yaml: description, shows, cost -->\n"
END = "<!-- end of the table generated from config/scales.yaml -->\n"


def scales_table() -> str:
    """README's table of scales, made from config/scales.yaml (the measured costs live there only)."""
    scales = load_yaml((REPO / "config" / "scales.yaml").read_text(encoding="utf-8"))
    rows = [
        f"| `{name}` | {scale['description']} | {scale['shows']} | {scale['cost']} |" for name, scale in scales.items()
    ]
    return "\n".join(["| scale | what it runs | what it shows | what it costs |", "|---|---|---|---|", *rows]) + "\n"


def test_readme_shows_each_scales_cost_as_config_scales_yaml_states_it() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    generated = readme[readme.index(BEGIN) + len(BEGIN) : readme.index(END)]
    assert generated == scales_table(), f"README's table of scales differs; replace it by:\n{scales_table()}"
