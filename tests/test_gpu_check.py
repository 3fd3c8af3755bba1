"""benchmarks/gpu_check.sh in its CPU mode, so that the device check cannot rot before a GPU is lent.

The script runs as on the device: fastcert from this checkout on PYTHONPATH, and snakemake,
jsonschema, hypothesis and pytest-timeout made unimportable and pytest's plugin autoload off (the
device has none of them; pytest-timeout's ``timeout`` ini option then only warns). Every
figure the GPU run reports must be written and parse.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ABSENT_ON_DEVICE = ("snakemake", "jsonschema", "hypothesis", "pytest_timeout")
BLOCKER = f"""
import sys

class Absent:
    \"\"\"Wraps a finder: the packages absent on the device are not found (as if not installed).\"\"\"

    def __init__(self, inner):
        self.inner = inner

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT_ON_DEVICE!r}:
            return None
        return self.inner.find_spec(name, path, target)

    def __getattr__(self, name):
        return getattr(self.inner, name)

sys.meta_path[:] = [Absent(finder) for finder in sys.meta_path]
"""


def test_gpu_check_cpu_mode_writes_every_figure(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER))
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "GPU_CHECK_MODE": "cpu",
        "PYTHON": sys.executable,
        "PYTHONPATH": str(site),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }  # the plugins of the absent packages are not there either
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    status = [line.split("\t") for line in (out / "status.tsv").read_text().splitlines()]
    assert {row[0] for row in status} >= {
        "pytest-cuda",
        "bench-cifar10",
        "bench-mnist",
        "specs",
        "train-ours",
        "train-vanilla",
        "verify-ours-ibp",
        "verify-vanilla-ibp",
        "summary",
    }
    assert all(row[1] == "0" for row in status), status
    assert "skipped" in (out / "pytest-cuda.log").read_text()  # collected without the absent plugins
    for dataset in ("cifar10", "mnist"):
        bench = json.loads((out / f"bench-{dataset}.json").read_text())
        assert set(bench["steps_s"]) == {"clean", "ibp", "ibp+reg", "crown-ibp"}
        assert all(v["median"] > 0 for v in bench["steps_s"].values())
        assert {row["label"] for row in bench["ratios"]} >= {"IBP / clean", "CROWN-IBP (fused) / IBP"}
    assert json.loads((out / "bench-cifar10.json").read_text())["epoch"]["seconds"] > 0
    summary = json.loads((out / "summary.json").read_text())
    for method in ("ours", "vanilla"):
        run = out / "runs" / method
        assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
        result = json.loads((run / "result.json").read_text())
        assert result["status"] == "completed"
        assert result["precision"] == {
            "training": "float32",
            "certification": "float32",
            "nvidia_tf32_override": None,
        }
        spec = result["spec"]
        assert (spec["dataset"], spec["model"], spec["eps_train"], spec["eps_test"]) == ("mnist", "cnn7", 0.4, 0.4)
        verified = json.loads((out / f"verify-{method}-ibp.json").read_text())
        assert 0 <= verified["verified_err"] <= 1 and verified["n"] == 32
        assert summary["runs"][method]["verify"]["ibp"] == verified
        assert summary["runs"][method]["paper_schedule"] is False  # 2 epochs, not the paper's 70
    assert (out / "nvidia-smi.txt").exists() and (out / "env.txt").exists()
