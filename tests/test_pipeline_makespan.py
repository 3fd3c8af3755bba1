"""The workstation schedule of fastcert.pipeline.makespan against schedules worked out by hand."""

from __future__ import annotations

import pytest

from fastcert.pipeline.makespan import makespan


def test_packed_runs_on_two_gpus_of_two_slots_match_the_hand_schedule() -> None:
    # Longest first. 10 (2 slots) fills GPU 0 until 10; 8 and 6 share GPU 1 from 0; 5 (2 slots) waits
    # for GPU 1's slots (free at 8) rather than GPU 0's (10) and ends at 13; 3 takes a GPU 0 slot at 10.
    runs = [(3.0, 1), (5.0, 2), (6.0, 1), (8.0, 1), (10.0, 2)]
    assert makespan(runs, gpus=2, slots_per_gpu=2) == 13.0


def test_one_gpu_without_packing_is_the_sum_and_many_gpus_the_longest_run() -> None:
    runs = [(4.0, 1), (2.0, 1), (7.0, 1)]
    assert makespan(runs, 1, 1) == 13.0
    assert makespan(runs, 3, 1) == 7.0
    # LPT on 2 GPUs: 7 | 4, then 2 joins 4: ends at 7
    assert makespan(runs, 2, 1) == 7.0
    assert makespan([], 8, 1) == 0.0


def test_a_run_needing_more_slots_than_a_gpu_has_is_refused() -> None:
    with pytest.raises(ValueError, match="needs 3 slot"):
        makespan([(1.0, 3)], 4, 2)
