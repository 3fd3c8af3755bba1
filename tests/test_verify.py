"""Verified error of a model on a split under IBP, CROWN-IBP and CROWN (fastcert.run.verify)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch
from soundness import single_thread  # noqa: F401  (autouse: tiny tensors, shared cores)
from torch import nn

from fastcert.method.bounds import BOUND_METHODS, bound_pass
from fastcert.method.losses import certified, spec_matrix
from fastcert.method.perturbation import input_box
from fastcert.run import verify as verify_module
from fastcert.run.data.loading import load_dataset
from fastcert.run.verify import ShardError, verify


@pytest.fixture(scope="module")
def setup():  # type: ignore[no-untyped-def]
    """A small conv net (BN, train mode) on 40 synthetic MNIST test images."""
    _, test, info = load_dataset("mnist", source="synthetic", train_size=20, test_size=40, seed=0)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 4, stride=4),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 7 * 7, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    )
    with torch.no_grad():  # settle the running stats on the data
        model.train()
        for x, _ in test.batches(40, shuffle=False, augment=False):
            for _ in range(20):
                model(x)
    return model, test, info


def _by_hand(model: nn.Module, test, info, eps: float, method: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The same quantity in one batch, on a copy in eval mode."""
    frozen = copy.deepcopy(model).eval()
    wrong = unverified = 0
    with torch.no_grad():
        for x, y in test.batches(40, shuffle=False, augment=False):
            x_lower, x_upper = input_box(x, eps, info.mean, info.std)
            result = bound_pass(frozen, x, x_lower, x_upper, C=spec_matrix(y, 10), method=method, intersect_ibp=True)
            wrong += int((result.clean.argmax(1) != y).sum())
            unverified += int((~certified(result.lower)).sum())
    return wrong / len(test), unverified / len(test)


@pytest.mark.parametrize("method", BOUND_METHODS)
def test_verify_counts_every_example(setup, method: str) -> None:  # type: ignore[no-untyped-def]
    model, test, info = setup
    eps = 0.002
    got = verify(model, test, info, eps, method, batch_size=16)
    standard, verified = _by_hand(model, test, info, eps, method)
    assert (got["standard_err"], got["verified_err"], got["n"]) == (standard, verified, 40)
    assert got["verifiers"][method]["tried"] == 40 and got["verifiers"][method]["verified_err"] == verified
    assert 0 < got["verified_err"] < 1, "the check needs some verified and some unverified examples"
    assert got["verified_err"] >= got["standard_err"]


def test_verify_is_batch_independent_and_leaves_the_model_alone(setup) -> None:  # type: ignore[no-untyped-def]
    model, test, info = setup
    before = copy.deepcopy(model.state_dict())
    results = [verify(model, test, info, 0.002, "crown-ibp", batch_size=size) for size in (7, 40)]
    for result in results:
        result["verifiers"]["crown-ibp"]["seconds"] = 0.0
    assert results[0] == results[1]
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_tighter_methods_verify_more_and_eps_zero_verifies_the_correct(setup) -> None:  # type: ignore[no-untyped-def]
    model, test, info = setup
    errors = {method: verify(model, test, info, 0.004, method)["verified_err"] for method in BOUND_METHODS}
    assert errors["crown"] <= errors["crown-ibp"] <= errors["ibp"]
    assert errors["crown"] < errors["ibp"]
    at_zero = verify(model, test, info, 0.0, "ibp")
    assert at_zero["verified_err"] == at_zero["standard_err"]


def test_verify_rejects_an_unknown_method(setup) -> None:  # type: ignore[no-untyped-def]
    model, test, info = setup
    with pytest.raises(ValueError, match="unknown verifier 'alpha-crown'"):
        verify(model, test, info, 0.01, "alpha-crown")


def _certified_by_hand(model: nn.Module, test, info, eps: float, method: str) -> torch.Tensor:  # type: ignore[no-untyped-def]
    frozen = copy.deepcopy(model).eval()
    with torch.no_grad():
        ((x, y),) = test.batches(40, shuffle=False, augment=False)
        x_lower, x_upper = input_box(x, eps, info.mean, info.std)
        result = bound_pass(frozen, x, x_lower, x_upper, C=spec_matrix(y, 10), method=method, intersect_ibp=True)
        return certified(result.lower)


def test_the_cascade_certifies_what_any_verifier_certifies(setup) -> None:  # type: ignore[no-untyped-def]
    """Cheapest first, each verifier on the examples still uncertified; the last stage is "any"."""
    model, test, info = setup
    eps = 0.004
    by_hand = {method: _certified_by_hand(model, test, info, eps, method) for method in BOUND_METHODS}
    got = verify(model, test, info, eps, "crown,ibp,crown-ibp", batch_size=16)  # order given: irrelevant
    assert list(got["verifiers"]) == ["ibp", "crown-ibp", "crown"]
    ibp, crown_ibp, crown = (got["verifiers"][name] for name in ("ibp", "crown-ibp", "crown"))
    wrong = round(got["standard_err"] * 40)
    assert ibp["tried"] == 40 and ibp["certified"] == int(by_hand["ibp"].sum())
    assert crown_ibp["tried"] == 40 - wrong - ibp["certified"]  # misclassified ones are never tried again
    any_certified = by_hand["ibp"] | by_hand["crown-ibp"] | by_hand["crown"]
    assert got["verified_err"] == crown["verified_err"] == 1 - int(any_certified.sum()) / 40
    assert crown_ibp["verified_err"] == 1 - int((by_hand["ibp"] | by_hand["crown-ibp"]).sum()) / 40
    assert ibp["verified_err"] >= crown_ibp["verified_err"] >= crown["verified_err"]
    assert crown["verified_err"] < ibp["verified_err"], "the check needs the later verifiers to add something"


def test_sharded_verification_resumes_without_redoing_finished_shards(  # type: ignore[no-untyped-def]
    setup, tmp_path, monkeypatch
) -> None:
    model, test, info = setup
    shards = tmp_path / "shards"
    whole = verify(model, test, info, 0.004, "ibp,crown-ibp")
    first = verify(model, test, info, 0.004, "ibp,crown-ibp", shard_dir=shards, shard_size=15, shard_key={"run": "a"})
    assert sorted(path.name for path in shards.iterdir()) == [f"shard-0000{i}.json" for i in range(3)]
    for result in (whole, first):
        for stage in result["verifiers"].values():
            stage["seconds"] = 0.0
    assert first == whole
    (shards / "shard-00001.json").unlink()  # as if killed while verifying the second shard
    calls = []
    real = verify_module._verify_examples

    def counting(model, split, *args):  # type: ignore[no-untyped-def]
        calls.append(len(split))
        return real(model, split, *args)

    monkeypatch.setattr(verify_module, "_verify_examples", counting)
    again = verify(model, test, info, 0.004, "ibp,crown-ibp", shard_dir=shards, shard_size=15, shard_key={"run": "a"})
    assert calls == [15]  # only the missing shard
    assert (again["standard_err"], again["verified_err"]) == (whole["standard_err"], whole["verified_err"])
    with pytest.raises(ShardError, match="another verification"):
        verify(model, test, info, 0.01, "ibp,crown-ibp", shard_dir=shards, shard_size=15, shard_key={"run": "a"})
    (shards / "shard-00002.json").write_text("{not json")
    with pytest.raises(ShardError, match=r"shard-00002\.json: not a readable verification shard"):
        verify(model, test, info, 0.004, "ibp,crown-ibp", shard_dir=shards, shard_size=15, shard_key={"run": "a"})


def test_verification_sizes_follow_the_free_gpu_memory_and_keep_the_cpu_defaults(setup, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 24 item 4: fake free-memory numbers (no GPU needed); a CPU verification never asks CUDA."""
    from fastcert.method.bounds.crown import CHUNK_ELEMENTS
    from fastcert.run.verify import DEFAULT_BATCH, verification_sizes

    assert verification_sizes(torch.device("cpu")) == (DEFAULT_BATCH, None)
    small = verification_sizes(torch.device("cuda"), free_bytes=2**30)  # little free memory: CPU sizes
    assert small.batch == DEFAULT_BATCH and small.chunk_elements == CHUNK_ELEMENTS
    h100 = verification_sizes(torch.device("cuda:0"), free_bytes=78 * 2**30)
    assert h100.batch == {name: size * 39 for name, size in DEFAULT_BATCH.items()}
    assert h100.chunk_elements == 39 * 2**30 // 32 > CHUNK_ELEMENTS
    huge = verification_sizes(torch.device("cuda"), free_bytes=1024 * 2**30)
    assert huge.batch["ibp"] == 64 * DEFAULT_BATCH["ibp"]  # capped

    def no_cuda(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("a CPU verification asked CUDA for its memory")

    monkeypatch.setattr(torch.cuda, "mem_get_info", no_cuda)
    model, test, info = setup
    assert verify(model, test, info, 0.002, "ibp")["n"] == 40


def test_the_verification_table_shows_each_verifier_beside_the_papers_ibp(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 22 §2.4: the workflow's table of Table 1's models re-verified by the cascade."""
    from run_builders import write_manifest, write_run

    from fastcert.reporting.collect import load_manifest
    from fastcert.reporting.tables import build_target, load_paper
    from fastcert.reporting.verification import verification_table

    model, test, info = setup
    cascade = verify(model, test, info, 0.004, "ibp,crown-ibp,crown")
    only_ibp = verify(model, test, info, 0.004, "ibp")
    key = {"dataset": "MNIST", "schedule_total": 70, "schedule_phases": [0, 20, 50], "model": "CNN-7"}
    entries = [({**key, "method": "Ours"}, "runs/a"), ({**key, "method": "Vanilla IBP"}, "runs/b")]
    for name in ("a", "b"):
        write_run(tmp_path / "runs" / name)
    manifest = load_manifest(write_manifest(tmp_path / "table1.json", "table1", entries), tmp_path)
    paper = load_paper(Path(__file__).resolve().parents[1] / "config" / "paper_results.yaml")
    text = verification_table(manifest, {"a": cascade, "b": only_ibp}, paper)
    rows = {line.split(" | ")[2]: line.strip("| ").split(" | ") for line in text.splitlines() if "| MNIST |" in line}
    table = build_target("table1", paper, manifest)
    paper_ours = next(
        c.paper for r in table.rows if r.key.get("method") == "Ours" for c in r.cells if c.metric == "verified"
    )
    stages = cascade["verifiers"]
    assert rows["Ours"][3:] == [
        f"{paper_ours:.2f}",
        *(f"{100 * stages[name]['verified_err']:.2f}" for name in ("ibp", "crown-ibp", "crown")),
        f"{100 * cascade['verified_err']:.2f}",
        "1",
        "—",
    ]
    ibp = f"{100 * only_ibp['verified_err']:.2f}"
    assert rows["Vanilla IBP"][4:] == [ibp, "—", "—", ibp, "1", "—"]  # verifiers not run: no number
    assert "on 40 test images per model" in text


def test_a_diverged_run_is_not_verified_and_its_row_says_why(setup, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 22: a run that diverged before its first epoch (no checkpoint at all) gets the document that
    stands for its verification, and its row names it and the reason: no failed job, no silent gap."""
    from run_builders import train_diverged, write_manifest, write_run

    from fastcert.records import RESULT_FILE, read_result
    from fastcert.reporting.collect import load_manifest
    from fastcert.reporting.tables import load_paper
    from fastcert.reporting.verification import skipped, verification_table

    model, test, info = setup
    diverged = train_diverged(tmp_path / "runs" / "d")
    assert not any(diverged.glob("checkpoint_*.pt"))
    reason = read_result(diverged / RESULT_FILE)["diverged"]["reason"]
    assert skipped(diverged) == {"run_dir": str(diverged), "not_verified": f"diverged in epoch 1 ({reason})"}
    completed = write_run(tmp_path / "runs" / "c")
    (completed / "checkpoint_best.pt").write_bytes(b"")  # only its presence counts here
    assert skipped(completed) is None
    key = {"dataset": "MNIST", "schedule_total": 70, "schedule_phases": [0, 20, 50], "model": "CNN-7"}
    entries = [({**key, "method": "Ours"}, "runs/c"), ({**key, "method": "Ours"}, "runs/d")]
    entries.append(({**key, "method": "Vanilla IBP"}, "runs/e"))
    shutil.copytree(diverged, tmp_path / "runs" / "e")  # a second diverged run, for a row of its own
    manifest = load_manifest(write_manifest(tmp_path / "table1.json", "table1", entries), tmp_path)
    paper = load_paper(Path(__file__).resolve().parents[1] / "config" / "paper_results.yaml")
    docs = {"c": verify(model, test, info, 0.004, "ibp"), "d": skipped(diverged), "e": skipped(tmp_path / "runs/e")}
    text = verification_table(manifest, docs, paper)
    rows = {line.split(" | ")[2]: line.strip("| ").split(" | ") for line in text.splitlines() if "| MNIST |" in line}
    ibp = f"{100 * docs['c']['verified_err']:.2f}"
    note = f"diverged in epoch 1 ({reason})"
    assert rows["Ours"][4:] == [ibp, "—", "—", ibp, "1", f"`d`: {note}"]  # the completed repeat's numbers only
    assert rows["Vanilla IBP"][4:] == ["—", "—", "—", "—", "0", f"`e`: {note}"]
    assert "on 40 test images per model" in text


def test_the_workflow_does_not_verify_a_diverged_run_and_its_job_succeeds(tmp_path: Path) -> None:
    """Issue 22: rule verify_checkpoint on a real diverged run writes the document that says why (the
    verification table's input) instead of failing on the missing checkpoint."""
    from run_builders import train_diverged
    from workflow_builders import copy_workflow, snakemake

    from fastcert.io import read_json
    from fastcert.records import RESULT_FILE, read_result

    workdir = copy_workflow(tmp_path / "workflow")
    reason = read_result(train_diverged(workdir / "runs" / "d") / RESULT_FILE)["diverged"]["reason"]
    target = "results/smoke/verification/d.json"
    args = ("--cores", "1", "--config", "scale=smoke", "--allowed-rules", "verify_checkpoint", "--", target)
    done = snakemake(workdir, *args)
    assert done.returncode == 0, done.stdout
    assert read_json(workdir / target) == {"run_dir": "runs/d", "not_verified": f"diverged in epoch 1 ({reason})"}
    log = (workdir / "logs/smoke/verification/d.log").read_text()
    assert log == f"runs/d: the run diverged in epoch 1 ({reason}); not verified\n"
