"""Time fastcert's CROWN verifier against auto_LiRPA's CROWN on the same weights and boxes, one CPU thread.

Cases: CNN-7 at 1/8 width on MNIST shapes (the demo's model) and on CIFAR-10 shapes, eval mode,
margin bounds (``C`` of the labels). Weights are the paper's IBP init (``fastcert.method.init``) on
a fixed seed, or a trained fastcert checkpoint with ``--checkpoint`` (its model and dataset then
make the only case). Timed, in process CPU time (robust to a shared machine's load):

* ``fastcert crown``: the verifier ``fastcert verify --verifier crown`` runs, CROWN intersected with
  IBP (backward passes only for IBP-unstable neurons);
* ``fastcert crown (plain)``: auto_LiRPA's algorithm (every intermediate bound by CROWN);
* ``auto_LiRPA CROWN``: ``BoundedModule.compute_bounds(method="CROWN")`` of auto_LiRPA, when it can
  be imported (it is not a dependency of fastcert: build 0.7.1 from its public source into a
  separate folder and put it on ``PYTHONPATH``; the line is skipped when absent).

Each computation first runs once untimed on two examples (kernel selection, plan compilation and
auto_LiRPA's graph set-up are one-time costs). The report gives each time, the ratios to
auto_LiRPA's and the certified counts (the plain CROWN bounds of fastcert and auto_LiRPA also get
their largest difference, a correctness check).
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from fastcert.method.bounds import bound_pass
from fastcert.method.init import initialize
from fastcert.method.losses import certified, spec_matrix
from fastcert.method.models import DATASET_SHAPES, build

Case = tuple[str, nn.Module, Tensor, Tensor, Tensor, Tensor]  # name, model, x, x_lower, x_upper, C


def _cases(args: argparse.Namespace) -> list[Case]:
    generator = torch.Generator().manual_seed(args.seed)
    models: list[tuple[str, nn.Module, str, float]] = []
    if args.checkpoint is not None:  # the run's own model and first test images
        return [_checkpoint_case(args)]
    for dataset, eps in (("mnist", args.eps_mnist), ("cifar10", args.eps_cifar)):
        torch.manual_seed(args.seed)
        network = build("cnn7", dataset, width=args.width)
        initialize(network, "ibp", generator)
        models.append((f"cnn7 w={args.width} {dataset} eps={eps:g}", network, dataset, eps))
    cases: list[Case] = []
    for name, model, dataset, eps in models:
        channels, size, _ = DATASET_SHAPES[dataset]
        x = torch.rand((args.n, channels, size, size), generator=generator)
        model.eval()
        with torch.no_grad():
            labels = model(x).argmax(1)  # margins of the predicted class: what a correct example certifies
        C = spec_matrix(labels, 10)
        cases.append((name, model, x, (x - eps).clamp(0, 1), (x + eps).clamp(0, 1), C))
    return cases


def _checkpoint_case(args: argparse.Namespace) -> Case:
    from fastcert.method.perturbation import input_box
    from fastcert.run.lifecycle import build_model, load_checkpoint, load_data
    from fastcert.run.spec import validate

    checkpoint = load_checkpoint(args.checkpoint)
    spec = validate(checkpoint["spec"])
    model = build_model(spec)
    model.load_state_dict(checkpoint["model"])
    model.eval()
    _, test, info = load_data(spec, torch.device("cpu"))
    x, labels = next(iter(test.batches(args.n, shuffle=False, augment=False)))
    eps = spec.eps_test if args.eps is None else args.eps
    x_lower, x_upper = input_box(x, eps, info.mean, info.std)
    return f"{args.checkpoint} eps={eps:g}", model, x, x_lower, x_upper, spec_matrix(labels, info.num_classes)


def _timed(compute: Callable[[], Tensor]) -> tuple[float, Tensor]:
    start = time.process_time()
    with torch.no_grad():
        lower = compute()
    return time.process_time() - start, lower


def _auto_lirpa() -> Any | None:
    """The auto_LiRPA module, or None (with torch ≥ 2.9 its ONNX export needs opset 11 loaded first)."""
    try:
        importlib.import_module("torch.onnx._internal.torchscript_exporter.symbolic_opset11")
    except ImportError:
        pass
    try:
        return importlib.import_module("auto_LiRPA")
    except ImportError:
        return None


def _runs(
    model: nn.Module, x: Tensor, x_lower: Tensor, x_upper: Tensor, C: Tensor, lirpa: Any | None
) -> dict[str, Callable[[], Tensor]]:
    """The timed computations of one case, each returning margin lower bounds [B, K − 1]."""

    def fastcert(method: str, intersect_ibp: bool = False) -> Callable[[], Tensor]:
        return lambda: bound_pass(model, x, x_lower, x_upper, C=C, method=method, intersect_ibp=intersect_ibp).lower

    runs = {
        "fastcert crown": fastcert("crown", intersect_ibp=True),
        "fastcert crown (plain)": fastcert("crown"),
        "fastcert ibp": fastcert("ibp"),
    }
    if lirpa is not None:
        bounded = lirpa.BoundedModule(model, x, device="cpu")
        box = lirpa.BoundedTensor(x, lirpa.PerturbationLpNorm(norm=float("inf"), x_L=x_lower, x_U=x_upper))
        runs["auto_LiRPA CROWN"] = lambda: bounded.compute_bounds(x=(box,), C=C, method="CROWN", bound_upper=False)[0]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="examples per case (default: %(default)s)")
    parser.add_argument("--width", type=float, default=0.125, help="CNN-7 width factor (default: %(default)s)")
    parser.add_argument("--eps-mnist", type=float, default=0.02, help="box radius, MNIST (default: %(default)s)")
    parser.add_argument("--eps-cifar", type=float, default=2 / 255, help="box radius, CIFAR (default: 2/255)")
    parser.add_argument(
        "--checkpoint", help="a fastcert checkpoint to time on its first test images instead of the init-weight models"
    )
    parser.add_argument(
        "--eps", type=float, help="with --checkpoint: eps in pixel units (default: the spec's eps_test)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lirpa = _auto_lirpa()
    version = lirpa.__version__ if lirpa else "absent (skipped)"
    print(f"torch {torch.__version__}, 1 thread, process CPU time; auto_LiRPA: {version}")
    for name, model, x, x_lower, x_upper, C in _cases(args):
        runs = _runs(model, x, x_lower, x_upper, C, lirpa)
        print(f"\n{name}, {len(x)} examples")
        for warm_up in _runs(model, x[:2], x_lower[:2], x_upper[:2], C[:2], lirpa).values():  # one-time costs
            _timed(warm_up)
        results = {label: _timed(run) for label, run in runs.items()}
        reference = results.get("auto_LiRPA CROWN")
        for label, (seconds, lower) in results.items():
            ratio = f"  {seconds / reference[0]:.2f}x auto_LiRPA" if reference else ""
            print(f"  {label:24s} {seconds:8.2f} s  certified {int(certified(lower).sum())}/{len(x)}{ratio}")
        if reference:
            difference = (results["fastcert crown (plain)"][1] - reference[1]).abs().max()
            print(f"  plain CROWN bounds, fastcert vs auto_LiRPA: largest difference {float(difference):.2e}")


if __name__ == "__main__":
    main()
