"""The recipes of docs/extending.md, each done step by step as written, on a toy: a training method,
a model, a dataset, a table. The registrations a recipe writes into the source (a table entry, a name) are made
here with monkeypatch, on the same dicts and tuples, so every step's effect is the one the recipe
promises (a spec validates, a run trains, a table renders)."""

from __future__ import annotations

import copy
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from footprints import measured_footprint
from run_builders import write_run
from torch import Tensor, nn
from workflow_builders import EXPERIMENTS, PAPER

from fastcert import datasets, methods, vocabulary
from fastcert.datasets import DatasetSpec
from fastcert.method import models, objectives
from fastcert.method.bounds import bound_pass
from fastcert.method.losses import robust_ce, spec_matrix
from fastcert.method.objectives import BatchBounds
from fastcert.pipeline.config import check, load_schema
from fastcert.pipeline.errors import ExperimentError
from fastcert.pipeline.experiments import expand_targets, manifest_document
from fastcert.records import METRICS_FILE, RESULT_FILE, read_metrics, read_result
from fastcert.reporting.table_layouts import LAYOUTS
from fastcert.reporting.tables import render_target
from fastcert.run import footprint
from fastcert.run import spec as spec_module
from fastcert.run.cli import main
from fastcert.run.data import loading
from fastcert.run.data.splits import Split, TensorStore
from fastcert.run.lifecycle import EXIT_COMPLETED, execute
from fastcert.run.spec import SpecError, validate

REPO = Path(__file__).resolve().parents[1]
SMOKE_RUN = {  # a smoke-size run: width 1/16, synthetic MNIST, three short epochs
    "dataset": "mnist",
    "data": {"source": "synthetic", "train_size": 64, "test_size": 32},
    "width": 0.0625,
    "schedule": {"start": 1, "length": 2, "epochs": 3, "milestones": [3]},
    "eps_train": 0.1,
    "eps_test": 0.1,
    "batch_size": 16,
    "device": "cpu",
}


def quiet(line: str) -> None:
    del line


# --- A training method -----------------------------------------------------------------------


class HalfCleanObjective:
    """A toy objective: IBP's robust CE averaged with the clean CE (counts its calls per pass)."""

    def __init__(self) -> None:
        self.calls = {True: 0, False: 0}

    def __call__(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        x_lower: Tensor,
        x_upper: Tensor,
        *,
        num_classes: int,
        eps_fraction: float,
        training: bool,
    ) -> BatchBounds:
        del eps_fraction
        self.calls[training] += 1
        result = bound_pass(model, x, x_lower, x_upper, C=spec_matrix(y, num_classes, dtype=x.dtype))
        loss = (robust_ce(result.lower) + F.cross_entropy(result.clean, y)) / 2
        return BatchBounds(result.clean, loss, result.lower, list(result.pre_activation))


def test_recipe_a_training_method(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 1. the objective, registered in OBJECTIVES
    objective = HalfCleanObjective()
    monkeypatch.setitem(objectives.OBJECTIVES, "half-clean", lambda loss_fusion: objective)
    # 2. the method, in the method table
    toy = methods.TrainingMethod(
        init="xavier_normal", regularizers=("std",), objective="half-clean", summary="a toy method"
    )
    monkeypatch.setitem(methods.TRAINING_METHODS, "toy", toy)
    # 3. a spec naming it validates to the method's defaults and trains through `fastcert train`
    spec = validate({**SMOKE_RUN, "method": "toy"})
    assert (spec.init, spec.regularizers) == ("xavier_normal", ("std",))
    spec_file = tmp_path / "RUN.yaml"
    spec_file.write_text(yaml.safe_dump({**SMOKE_RUN, "method": "toy"}), encoding="utf-8")
    assert main(["train", "--spec", str(spec_file), "--out", str(tmp_path / "run"), "--no-progress"]) == EXIT_COMPLETED
    assert read_result(tmp_path / "run" / RESULT_FILE)["status"] == "completed"
    assert objective.calls[True] > 0 and objective.calls[False] > 0  # trained and tested with it
    for record in read_metrics(tmp_path / "run" / METRICS_FILE):
        if record["phase"] != "target":  # warmup epochs optimize exactly the method's terms
            assert record["train"]["reg"] == pytest.approx(record["train"]["l_std"])
    with pytest.raises(SpecError, match="method: unknown value 'toy2'; valid values: vanilla, ours, crown-ibp, toy"):
        validate({**SMOKE_RUN, "method": "toy2"})


# --- A model ---------------------------------------------------------------------------------


def _toy_cnn(spec: Any, channels: int, size: int, classes: int, dataset: str) -> nn.Sequential:
    """Two convolutions (8 and 16 channels at width 1, the second with stride 2) and the usual head."""
    del dataset
    c1, c2 = spec.channels(8), spec.channels(16)
    layers = [*spec.conv_bn("1", channels, c1, 3), ("relu1", nn.ReLU())]
    layers += [*spec.conv_bn("2", c1, c2, 3, stride=2), ("relu2", nn.ReLU())]
    size = (size - 1) // 2 + 1
    return nn.Sequential(OrderedDict(layers + spec.head(c2 * size * size, classes)))


def test_recipe_a_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 1.-2. the builder, registered, and its name in MODELS (every module that imported the tuple
    # sees the new one, as after an edit of fastcert/vocabulary.py)
    monkeypatch.setitem(models._BUILDERS, "toy_cnn", _toy_cnn)
    names = (*vocabulary.MODELS, "toy_cnn")
    for module in (vocabulary, models, spec_module):
        monkeypatch.setattr(module, "MODELS", names)
    # 3. its smallest layer at width 1 (8 channels), per dataset
    for dataset in ("mnist", "cifar10", "tinyimagenet"):
        monkeypatch.setitem(spec_module.SMALLEST_LAYER, ("toy_cnn", dataset), 8)
    # 4. its memory footprint per dataset (fastcert train checks the fit, the workflow packs GPUs by it)
    for dataset in ("mnist", "cifar10", "tinyimagenet"):
        monkeypatch.setitem(
            footprint.MODEL_FOOTPRINT, ("toy_cnn", dataset), measured_footprint("toy_cnn", dataset, 1.0)
        )
    built = models.build("toy_cnn", "mnist")
    assert min(m.out_channels for m in built.modules() if isinstance(m, nn.Conv2d)) == 8
    with pytest.raises(SpecError, match="width: "):
        validate({**SMOKE_RUN, "model": "toy_cnn", "width": 0.05})  # 0.4 channels
    # 5. a spec naming it validates and trains
    spec = validate({**SMOKE_RUN, "model": "toy_cnn", "width": 0.5, "method": "ours"})
    assert execute(spec, tmp_path / "run", log=quiet) == EXIT_COMPLETED
    records = read_metrics(tmp_path / "run" / METRICS_FILE)
    assert len(records) == 3 and len(records[0]["train"]["active_per_layer"]) == 3  # two convs + hidden FC


# --- A dataset -------------------------------------------------------------------------------

TOY_DATA = DatasetSpec(
    name="toy",
    display="Toy",
    mean=(0.5,),
    std=(0.25,),
    num_classes=4,
    input_shape=(1, 12, 12),
    n_train=96,
    n_test=48,
    padding=None,
)


def _load_toy(root: Path, mirror: Path | None, source: str) -> tuple[Split, Split, str]:
    """The toy dataset's loader: both splits from ``root/toy.pt`` (written by the test)."""
    del mirror
    arrays = torch.load(root / "toy.pt", weights_only=True)
    splits = [
        Split(TensorStore(arrays[f"{which}_images"]), arrays[f"{which}_labels"], TOY_DATA.mean, TOY_DATA.std, None)
        for which in ("train", "test")
    ]
    return splits[0], splits[1], source


def test_recipe_a_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 1. the catalog entry and its sources (every module that derived a copy of the catalog at import
    # sees the new one, as after an edit of fastcert/datasets.py)
    monkeypatch.setitem(datasets.DATASETS, "toy", TOY_DATA)
    monkeypatch.setitem(datasets.SOURCES, "toy", ("toy-files", "synthetic"))
    monkeypatch.setattr(spec_module, "DATASETS", (*spec_module.DATASETS, "toy"))
    monkeypatch.setattr(spec_module, "ALL_SOURCES", (*spec_module.ALL_SOURCES, "toy-files"))
    monkeypatch.setitem(models.DATASET_SHAPES, "toy", (1, 12, 4))
    # 2. the loader of its files
    monkeypatch.setitem(loading._LOADERS, "toy", _load_toy)
    generator = torch.Generator().manual_seed(0)
    arrays = {}
    for which, n in (("train", TOY_DATA.n_train), ("test", TOY_DATA.n_test)):
        labels = torch.arange(n) % 4
        images = torch.randint(0, 64, (n, 1, 12, 12), generator=generator, dtype=torch.uint8)
        images[:, :, :, :3] += (labels * 60).to(torch.uint8)[:, None, None, None]  # a learnable class stripe
        arrays |= {f"{which}_images": images, f"{which}_labels": labels}
    torch.save(arrays, tmp_path / "toy.pt")
    # 3. each model's smallest layer on it
    for model in vocabulary.MODELS:
        monkeypatch.setitem(spec_module.SMALLEST_LAYER, (model, "toy"), spec_module.SMALLEST_LAYER[(model, "mnist")])
    # 4. each model's memory footprint on it
    for model in vocabulary.MODELS:
        monkeypatch.setitem(footprint.MODEL_FOOTPRINT, (model, "toy"), measured_footprint(model, "toy", 1.0))
    # 5. specs naming it validate against its sizes and train, from its files and synthetic
    with pytest.raises(SpecError, match=r"data\.train_size: 200 exceeds the 96 examples of toy"):
        validate({**SMOKE_RUN, "dataset": "toy", "data": {"source": "toy-files", "train_size": 200}})
    for source in ("toy-files", "synthetic"):
        data = {**SMOKE_RUN["data"], "source": source, "root": str(tmp_path)}
        run = {**SMOKE_RUN, "dataset": "toy", "data": data}
        assert execute(validate(run), tmp_path / source, log=quiet) == EXIT_COMPLETED
        result = read_result(tmp_path / source / RESULT_FILE)
        assert result["data"] == {
            "name": "toy",
            "source": source,
            "synthetic": source == "synthetic",
            "n_train": 64,
            "n_test": 32,
        }


# --- A table ---------------------------------------------------------------------------------

TOY_LAYOUT = {
    "caption": r"A toy table: verified error (\%) of Vanilla IBP and Ours, CNN-7 on MNIST.",
    "match": ["dataset", "schedule_total", "schedule_phases", "model", "method"],
    "group": [],
    "group_label": "MNIST",
    "paper_epochs": "70 (0+20+50)",
    "columns": [["method", "Method"]],
    "metrics": [
        {
            "name": "verified",
            "header": "Verified",
            "paper": "verified",
            "source": {"from": "result", "field": "verified_err", "percent": True},
            "digits": 2,
        }
    ],
    "tolerance": {"kind": "abs", "value": 1.0},
}


def test_recipe_a_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 1. the target's runs, and its name allowed by the experiments schema
    experiments = copy.deepcopy(EXPERIMENTS)
    axes = {"dataset": ["MNIST"], "schedule": ["mnist-70"], "model": ["CNN-7"], "method": ["Vanilla IBP", "Ours"]}
    experiments["targets"]["table11"] = {"groups": [{"axes": axes, "repeats": 1}]}
    schema = load_schema(REPO / "workflow" / "schemas" / "experiments.schema.yaml")
    with pytest.raises(ExperimentError, match="table11"):
        check(copy.deepcopy(experiments), schema, "experiments.yaml")
    schema["properties"]["targets"]["propertyNames"]["pattern"] = "^(table([1-9]|1[01])|figure[1-7])$"
    check(copy.deepcopy(experiments), schema, "experiments.yaml")
    # 2. the paper's rows, keyed by the levels' row keys
    paper = yaml.safe_load((REPO / "config" / "paper_results.yaml").read_text(encoding="utf-8"))
    row = {"dataset": "MNIST", "schedule_total": 70, "schedule_phases": [0, 20, 50], "model": "CNN-7"}
    paper["tables"]["table11"] = {
        "rows": [{**row, "method": "Vanilla IBP", "verified": 14.0}, {**row, "method": "Ours", "verified": 12.0}]
    }
    paper_path = tmp_path / "paper_results.yaml"
    paper_path.write_text(yaml.safe_dump(paper), encoding="utf-8")
    # 3. the layout
    monkeypatch.setitem(LAYOUTS, "table11", TOY_LAYOUT)
    # 4. rendered from the target's manifest and its runs
    expansion = expand_targets(experiments, PAPER, "paper", "experiments.yaml")
    assert "table11" in expansion.targets("table")
    document = manifest_document(expansion, "table11", "paper", PAPER)
    verified = {"Vanilla IBP": 0.145, "Ours": 0.1125}
    for entry in document["runs"]:
        write_run(tmp_path / entry["run_dir"], verified=verified[entry["key"]["method"]])
    manifest_path = tmp_path / "table11.json"
    manifest_path.write_text(json.dumps(document), encoding="utf-8")
    tex_path = tmp_path / "table11.tex"
    render_target("table11", paper_path=paper_path, manifest_path=manifest_path, tex_path=tex_path, root=tmp_path)
    tex = tex_path.read_text(encoding="utf-8")
    assert "A toy table" in tex
    for ours, theirs in (("14.50", "14.00"), ("11.25", "12.00")):
        assert ours in tex and theirs in tex
