"""The plan's text (fastcert.pipeline.plan): its scale and units are stated in the file itself."""

from __future__ import annotations

from fastcert.pipeline import plan


def test_plan_states_scale_units_and_columns_then_the_table() -> None:
    runs = {"table1": {"runs/a", "runs/b"}, "table3": {"runs/b"}}
    text = plan.render(plan.plan_rows(runs, {"runs/a": 1.0, "runs/b": 0.25}), "smoke", "tiny subsets")
    comments = [line for line in text.splitlines() if line.startswith("#")]
    table = [line.split("\t") for line in text.splitlines() if not line.startswith("#")]
    assert comments[0] == "# plan at scale 'smoke': tiny subsets"
    assert any("own: runs only this target needs; shared: runs other targets" in line for line in comments)
    assert any("GPU-hours at the paper's GPU speed" in line for line in comments)
    assert any("CPU-core-hours at the CPU scales" in line for line in comments)
    assert table == [
        ["target", "runs", "own", "shared", "device_hours"],
        ["table1", "2", "1", "1", "1.25"],
        ["table3", "1", "0", "1", "0.25"],
        ["all", "2", "2", "0", "1.25"],
    ]
