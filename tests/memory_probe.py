"""Peak resident memory of one epoch of real training on the CPU, for tests/test_pipeline_resources.py.

Run as ``python tests/memory_probe.py SPEC_JSON``: builds the spec's model and data, resets the
kernel's resident-set high-water mark (``/proc/self/clear_refs``), trains, and prints the peak
resident bytes above the resident size just before training (model, optimizer, activations and
the bound passes' temporaries; the data were loaded before).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from fastcert.run.lifecycle import build_model, load_data
from fastcert.run.spec import validate
from fastcert.run.training import TrainConfig, train


def _status_bytes(key: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def main() -> None:
    torch.set_num_threads(1)
    spec = validate(json.loads(sys.argv[1]))
    model = build_model(spec)
    train_split, test_split, info = load_data(spec, torch.device("cpu"))
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident size
    before = _status_bytes("VmRSS")
    train(model, train_split, test_split, info, TrainConfig.from_spec(spec))
    print(json.dumps({"peak_bytes": _status_bytes("VmHWM") - before}))


if __name__ == "__main__":
    main()
