"""What a training method is: the one table of the run spec's ``method`` values.

A method is a named choice of three things: the weight initialization and the warmup regularizer
terms a run gets when its spec leaves ``init``/``regularizers`` null, and the training objective
(the bound whose robust loss is minimized). Everything that depends on the method reads it here:
spec validation (:mod:`fastcert.run.spec`, which resolves the nulls, so the resolved values are what
a run's hash covers), the training configuration (:class:`fastcert.run.training.TrainConfig`) and
the choice of objective (:mod:`fastcert.method.objectives`, which implements each objective name).

Why a module without torch: the workflow validates every run spec while Snakemake parses the
Snakefile. docs/extending.md says how to add a method.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingMethod:
    """One training method: its defaults and its objective (names of fastcert.vocabulary's
    ``INIT_SCHEMES`` and ``REGULARIZER_TERMS`` and of fastcert.method.objectives's ``OBJECTIVES``)."""

    init: str
    regularizers: tuple[str, ...]
    objective: str
    summary: str


TRAINING_METHODS: dict[str, TrainingMethod] = {
    "vanilla": TrainingMethod(
        init="default",
        regularizers=(),
        objective="ibp",
        summary="Vanilla IBP (Gowal et al. 2018): the model's own initialization, IBP robust loss",
    ),
    "ours": TrainingMethod(
        init="ibp",
        regularizers=("tightness", "relu"),
        objective="ibp",
        summary="the paper's method: IBP initialization, warmup regularizers L_tightness + L_relu, IBP robust loss",
    ),
    "crown-ibp": TrainingMethod(
        init="default",
        regularizers=(),
        objective="crown-ibp",
        summary="CROWN-IBP (Zhang et al. 2020, with loss fusion): IBP mixed with CROWN-IBP bounds over the ramp",
    ),
}


def training_method(name: str) -> TrainingMethod:
    """The table entry of ``name``; a ValueError naming the valid methods otherwise."""
    try:
        return TRAINING_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown training method {name!r}; valid: {', '.join(TRAINING_METHODS)}") from None
