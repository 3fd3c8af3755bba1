"""The memory footprint of a real model as fastcert.run.footprint.MODEL_FOOTPRINT counts it, shared by
the footprint's tests and the model and dataset recipes (docs/extending.md)."""

from __future__ import annotations


def measured_footprint(model_name: str, dataset: str, width: float) -> tuple[int, int, int]:
    """(parameters, summed and largest per-example activation) of the real model, as MODEL_FOOTPRINT counts them."""
    import torch
    from torch import nn

    from fastcert.method import models

    net = models.build(model_name, dataset, width=width).eval()
    channels, size, _ = models.DATASET_SHAPES[dataset]
    sizes: list[int] = []
    for module in net.modules():
        if not list(module.children()) and not isinstance(module, nn.Flatten):
            module.register_forward_hook(lambda _m, _i, out: sizes.append(out[0].numel()))
    with torch.no_grad():
        net(torch.zeros(1, channels, size, size))
    return sum(p.numel() for p in net.parameters()), sum(sizes), max(sizes)
