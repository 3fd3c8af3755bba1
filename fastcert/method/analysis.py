"""Computations the paper shows without training anything: Table 5's difference gains and Figure 1's
bound widths at initialization.

Why here and not in the reporting layer: reporting only reads and renders. These numbers come from
the method itself (initializations, IBP), so they are computed by a producer rule
(``workflow/scripts/produce.py``, declared in ``config/producers.yaml``) that writes
``results/producers/<name>.json``; the table and the figure read that file like any other result.

Both functions return *rows*, ``{"key": {...}, "values": {name: number or None}}``, the shape every
producer document has: the keys pair a row with the paper's (labels are the caller's), the values
are plain floats, so the document is JSON and the reader needs no torch.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import signature
from typing import Any

import torch

from fastcert.datasets import DATASETS
from fastcert.method.bounds import bound_pass
from fastcert.method.init import closed_form_gain, empirical_gain, initialize
from fastcert.method.models import DATASET_SHAPES, build
from fastcert.method.perturbation import input_box
from fastcert.method.regularizers import input_tightness, layer_tightness

Row = dict[str, dict[str, Any]]


def difference_gains(schemes: dict[str, str], fan_ins: list[int], trials: int, seed: int) -> list[Row]:
    """Table 5: per initialization (``label -> scheme``) and fan-in ``n``, the closed-form gain
    ``n/2 · E|W|`` (None where there is none) and the empirical mean over ``trials`` draws."""
    return [
        {
            "key": {"init": label, "n": n},
            "values": {
                "closed_form": closed_form_gain(scheme, n),
                "gain": empirical_gain(scheme, n, trials=trials, seed=seed),
            },
        }
        for label, scheme in schemes.items()
        for n in fan_ins
    ]


def init_bound_widths(model: dict[str, Any], schemes: dict[str, str], eps: float, batch: int, seed: int) -> list[Row]:
    """Figure 1: ``Ê(Δ_i)`` of every layer ``i`` (0 = the input box) of an untrained model, one IBP pass
    on ``batch`` uniformly random images at radius ``eps``, per initialization (``label -> scheme``).

    ``model``: ``{name, dataset, bn, width}`` as :func:`fastcert.method.models.build` takes them. Every
    scheme sees the same images and the same biases (seeded), so only the weights differ.
    """
    info = DATASETS[model["dataset"]]
    channels, size, _ = DATASET_SHAPES[model["dataset"]]
    pixels = torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))
    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    x = (pixels - mean) / std
    x_lower, x_upper = input_box(x, eps, info.mean, info.std)
    rows: list[Row] = []
    for label, scheme in schemes.items():
        # The constructor draws biases from the global RNG: seed a forked copy so they are fixed too.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build(model["name"], model["dataset"], bn=model["bn"], width=model["width"]).eval()
        initialize(net, scheme, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            out = bound_pass(net, x, x_lower, x_upper)
        widths = [float(input_tightness(x_lower, x_upper))] + layer_tightness(out.pre_activation)
        rows += [
            {"key": {"init": label, "layer": layer}, "values": {"width": width}} for layer, width in enumerate(widths)
        ]
    return rows


PRODUCERS: dict[str, Callable[..., list[Row]]] = {
    "difference_gains": difference_gains,
    "init_bound_widths": init_bound_widths,
}


def produce(name: str, declaration: dict[str, Any], where: str = "config/producers.yaml") -> dict[str, Any]:
    """The document of producer ``name`` (its ``declaration`` from ``where``): the declaration itself,
    so that a reader can say how the numbers were made, and the rows it computed."""
    function = declaration.get("function")
    if function not in PRODUCERS:
        raise ValueError(f"{where}: {name}.function {function!r} is not one of {sorted(PRODUCERS)}")
    parameters = declaration.get("parameters", {})
    try:
        signature(PRODUCERS[function]).bind(**parameters)
    except TypeError as err:
        raise ValueError(f"{where}: {name}.parameters do not fit {function}: {err}") from None
    return {
        "producer": name,
        "for": list(declaration.get("for", [])),
        "function": function,
        "parameters": parameters,
        "rows": PRODUCERS[function](**parameters),
    }
