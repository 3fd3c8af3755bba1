"""The plan's text (fastcert.pipeline.plan): its scale and units are stated in the file itself."""

from __future__ import annotations

from fastcert.pipeline import plan


def test_plan_states_scale_units_and_columns_then_the_table() -> None:
    runs = {"table1": {"runs/a", "runs/b"}, "table3": {"runs/b"}}
    machines = plan.Workstation(gpus=(1, 2), slots_per_gpu=1, slots={"runs/a": 1, "runs/b": 1})
    text = plan.render(
        plan.plan_rows(runs, {"runs/a": 1.0, "runs/b": 0.25}, machines), "smoke", "tiny subsets", machines
    )
    comments = [line for line in text.splitlines() if line.startswith("#")]
    table = [line.split("\t") for line in text.splitlines() if not line.startswith("#")]
    assert comments[0] == "# plan at scale 'smoke': tiny subsets"
    assert any("own: runs only this target needs; shared: runs other targets" in line for line in comments)
    assert any("GPU-hours at the paper's GPU speed" in line for line in comments)
    assert any("CPU-core-hours at the CPU scales" in line for line in comments)
    assert table == [
        ["target", "runs", "own", "shared", "device_hours", "hours_on_1_gpu", "hours_on_2_gpus"],
        ["table1", "2", "1", "1", "1.25", "1.25", "1.00"],
        ["table3", "1", "0", "1", "0.25", "0.25", "0.25"],
        ["all", "2", "2", "0", "1.25", "1.25", "1.00"],
    ]
    assert any(
        "hours_on_N_gpu(s): wall hours of the target's runs alone on N GPUs x 1 slot(s)" in line for line in comments
    )


def test_packed_runs_share_a_gpu_in_the_wall_clock_hours() -> None:
    runs = {"table1": {"runs/a", "runs/b", "runs/c"}}
    hours = {"runs/a": 2.0, "runs/b": 1.0, "runs/c": 1.0}
    whole = plan.Workstation(gpus=(1,), slots_per_gpu=1, slots=dict.fromkeys(hours, 1))
    packed = plan.Workstation(gpus=(1,), slots_per_gpu=4, slots={"runs/a": 4, "runs/b": 2, "runs/c": 2})
    assert plan.plan_rows(runs, hours, whole)[0]["hours_on_1_gpu"] == 4.0
    assert plan.plan_rows(runs, hours, packed)[0]["hours_on_1_gpu"] == 3.0  # b and c together after a
