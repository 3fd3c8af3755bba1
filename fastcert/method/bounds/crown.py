"""Backward linear-relaxation passes (CROWN) over a compiled plan: CROWN-IBP and full CROWN.

A backward pass starts from coefficients ``A`` [B, M, *shape] of a linear function of one plan
value (``C`` at the logits, an identity over the neurons of an intermediate layer, or the single
row of the loss-fusion bound) and walks the plan in reverse: every op's ``backward`` rule (in
:mod:`.ops`, next to its interval rule) maps the coefficients to its inputs and adds an offset,
coefficients meeting at a residual split are summed, and at the network input the linear function
is minimized over the box in center/radius form. Batching over examples *and* specs keeps it
to one kernel call per op, whatever M is.

Only lower bounds are propagated; an upper bound is minus the lower bound of ``−A``, so a pass
for both stacks ``[A, −A]`` along M. This is how auto_LiRPA's lower and upper passes relate too
(same ReLU lower slope for both).

The pass refines an IBP traversal (:func:`fastcert.method.bounds.bound_pass` with ``method="ibp"``),
whose :class:`~.ops.PassContext` supplies the BatchNorm maps (so train-mode BN uses the clean
batch's statistics of that very traversal, and running stats are updated once) and the IBP bounds
of every ReLU input. *CROWN-IBP* keeps those; *CROWN* replaces them layer by layer, in forward
order, by CROWN bounds from backward passes that start at that layer's neurons. That is
auto_LiRPA's ``sparse_intermediate_bounds=False`` ("crown_dense" in the fixtures); its default
sparse rule, which keeps IBP bounds for positions IBP calls stable in every example of the batch,
differs only where an IBP-stable neuron is CROWN-unstable, and makes the bounds of one example
depend on the others, so it is not reproduced. The neurons of a feature map (a layer reached from
the input through convolutions, BatchNorm, ReLUs and residual sums) are bounded on local
coefficients, one row per (example, neuron) with only its receptive field (:mod:`.window`); the
rest (after a Flatten) on dense coefficients, a chunk of neurons for the whole batch per pass.

*Intersected with IBP* (``intersect_ibp=True``, what ``fastcert verify`` uses): on IBP-trained
networks plain CROWN's intermediate bounds are far looser than IBP's (on the demo's CNN-7 it
certified 0 of 64 test images that IBP certifies 48 of), because its relaxation errors compound
layer by layer where IBP's intervals were trained to be tight. Both boxes contain the true range,
so their intersection does too. Each ReLU input then keeps IBP's bounds, made tighter by an
interval pass over the bounds already tightened before it (auto_LiRPA's "reference bounds": the
ReLUs before it now have CROWN-tight inputs), and gets backward passes
only for the neurons those bounds leave unstable in that example (in some example of the batch, for the
dense rows after a Flatten; a stable neuron's relaxation is exact, so tightening it changes nothing
downstream); values IBP bounds exactly (one Linear/Conv from the input, with BatchNorm or Flatten
around it) need none. The final bounds are intersected with IBP's as well, so the margin bound is
never below IBP's and every example IBP certifies stays certified. Per example the result does not
depend on the rest of the batch (an IBP-stable neuron's bounds do not enter any relaxation).

Speed: the local coefficients and per-example rows are what make intersected CROWN faster than
auto_LiRPA's CROWN on trained networks (``benchmarks/bench_verify.py``; figures in
``benchmarks/README.md``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .ops import BackwardContext, BatchNormOp, Bounds, ConvOp, FlattenOp, Flow, LinearOp, PassContext, ReluOp
from .plan import Plan, plan_for
from .result import BoundPass
from .window import Window, WindowContext, concretize, unit_windows

REFINED_METHODS = ("crown-ibp", "crown")
# Largest coefficient tensor (elements) one chunk of intermediate CROWN bounds may create: 64 MiB
# in float32; 2**20 to 2**24 time alike on CPU (within the machine's noise), larger chunks help on a GPU.
CHUNK_ELEMENTS = 2**24


class BackwardPass:
    """A traversal made ready for backward passes: plan, BN maps, ReLU input bounds, the box."""

    def __init__(self, model: nn.Module, context: PassContext, x_lower: Tensor, x_upper: Tensor) -> None:
        self.plan: Plan = plan_for(model)
        relus = [op for op in self.plan.ops if isinstance(op, ReluOp)]
        if len(relus) != len(context.pre_activation):
            raise ValueError(
                f"the traversal recorded {len(context.pre_activation)} ReLU input bounds but the "
                f"model has {len(relus)} ReLUs: it was not made on this model"
            )
        self.relus = relus
        self.context = BackwardContext(
            bn_affine=context.bn_affine,
            relu_bounds={op.index: bounds for op, bounds in zip(relus, context.pre_activation)},
            shapes=_value_shapes(self.plan, tuple(x_lower.shape[1:])),
        )
        self.center = (x_upper + x_lower) / 2
        self.radius = (x_upper - x_lower) / 2
        self.relu_lines: dict[int, tuple[Bounds, Tensor]] = {}  # shared by every window pass (WindowContext.lines)

    @property
    def pre_activation(self) -> list[Bounds]:
        """The ReLU input bounds in use, forward order."""
        return [self.context.relu_bounds[op.index] for op in self.relus]

    def lower(self, A: Tensor, value: int | None = None) -> Tensor:
        """Lower bound [B, M] of ``Σ A·v`` over the box, v = plan value ``value`` (default: output)."""
        start = self.plan.output if value is None else value
        pending: dict[int, Tensor] = {start: A}
        offset: Tensor | None = None
        for op in reversed(self.plan.ops[:start]):
            coefficients = pending.pop(op.index + 1, None)
            if coefficients is None:
                continue
            inputs, term = op.backward(self.context, coefficients)
            if term is not None:
                offset = term if offset is None else offset + term
            for src, A_in in zip(op.src, inputs):
                pending[src] = pending[src] + A_in if src in pending else A_in
        return _concretize(pending.pop(0), self.center, self.radius, offset)

    def bounds(self, A: Tensor, value: int | None = None) -> tuple[Tensor, Tensor]:
        """``(lower, upper)`` [B, M] of ``Σ A·v`` in one pass (``[A, −A]`` stacked along M)."""
        both = self.lower(torch.cat([A, -A], dim=1), value)
        specs = A.shape[1]
        return both[:, :specs], -both[:, specs:]

    def tighten_intermediate(self, chunk_elements: int | None = None, intersect_ibp: bool = False) -> None:
        """Full CROWN: replace every ReLU input's bounds, in forward order, by CROWN bounds.

        ``chunk_elements`` caps the coefficient tensor of one chunk (default :data:`CHUNK_ELEMENTS`).
        ``intersect_ibp``: keep the IBP bounds where CROWN is not tighter and run backward passes
        only for IBP-unstable neurons of values IBP does not bound exactly (module docstring);
        the IBP bounds of each ReLU input are those of an interval pass over the tightened bounds
        of the ReLUs before it, intersected with the traversal's (as auto_LiRPA's reference
        bounds), which leaves fewer neurons unstable.
        Feature maps reached from the input through convolutions, BatchNorm, ReLUs and residual
        sums are bounded on local coefficients (:mod:`.window`), one row per (example, neuron);
        other values (after a Flatten) on dense coefficients, per neuron for the whole batch.
        """
        chunk_elements = CHUNK_ELEMENTS if chunk_elements is None else chunk_elements
        windowed = _windowed_values(self.plan, self.context.shapes)
        if not intersect_ibp:
            for relu in self.relus:
                self._tighten(relu, windowed, chunk_elements, intersect_ibp=False)
            return
        exact = _exact_under_ibp(self.plan)
        interval = PassContext(
            batch=self.center.shape[0], stacked=False, bn_affine=self.context.bn_affine, reuse_bn=True
        )
        boxes: dict[int, Flow] = {0: Flow(self.center, self.radius)}
        for op in self.plan.ops:
            if not isinstance(op, ReluOp):
                boxes[op.index + 1] = op.interval(interval, *[boxes[src] for src in op.src])
            else:
                value = op.src[0]
                if value not in exact:
                    box = boxes[value]
                    lower, upper = self.context.relu_bounds[op.index]
                    assert box.radius is not None
                    self.context.relu_bounds[op.index] = (
                        torch.maximum(lower, box.stack - box.radius),
                        torch.minimum(upper, box.stack + box.radius),
                    )
                    self._tighten(op, windowed, chunk_elements, intersect_ibp=True)
                lower, upper = self.context.relu_bounds[op.index]
                lower, upper = lower.clamp(min=0), upper.clamp(min=0)
                boxes[op.index + 1] = Flow((upper + lower) / 2, (upper - lower) / 2)
            for released in self.plan.release[op.index]:
                boxes.pop(released, None)

    def _tighten(self, op: ReluOp, windowed: set[int], chunk_elements: int, intersect_ibp: bool) -> None:
        """CROWN bounds for the input of ReLU ``op``: of its unstable neurons, intersected with the
        bounds in use (``intersect_ibp``), or of all of them, replacing them."""
        value = op.src[0]
        ibp_lower, ibp_upper = self.context.relu_bounds[op.index]
        if intersect_ibp:
            unstable = (ibp_lower < 0) & (ibp_upper > 0)
        else:
            unstable = torch.ones_like(ibp_lower, dtype=torch.bool)
        if value in windowed:
            pairs = unstable.flatten(1).nonzero()
            if len(pairs) == 0:
                return
            lower, upper = self._window_bounds(value, pairs, chunk_elements)
            index = (pairs[:, 0], pairs[:, 1])
        else:
            rows = unstable.flatten(1).any(0).nonzero().flatten()
            if len(rows) == 0:
                return
            dense_lower, dense_upper = self._neuron_bounds(value, rows, chunk_elements)
            every = torch.arange(dense_lower.shape[0], device=dense_lower.device)[:, None]
            index = (every.expand_as(dense_lower).flatten(), rows.repeat(dense_lower.shape[0]))
            lower, upper = dense_lower.flatten(), dense_upper.flatten()
        self.context.relu_bounds[op.index] = (
            _tighten_pairs(ibp_lower, index, lower, torch.maximum if intersect_ibp else None),
            _tighten_pairs(ibp_upper, index, upper, torch.minimum if intersect_ibp else None),
        )

    def _neuron_bounds(self, value: int, rows: Tensor, chunk_elements: int) -> Bounds:
        """CROWN bounds [B, len(rows)] of the neurons ``rows`` (flat indices) of ``value``, a chunk of
        neurons per backward pass."""
        shape = self.context.shapes[value]
        neurons = math.prod(shape)
        batch = self.center.shape[0]
        widest = max(math.prod(s) for s in self.context.shapes[: value + 1])
        chunk = max(1, chunk_elements // (2 * batch * widest))
        lowers, uppers = [], []
        for begin in range(0, len(rows), chunk):
            chunk_rows = rows[begin : begin + chunk]
            unit = torch.zeros(len(chunk_rows), neurons, dtype=self.center.dtype, device=self.center.device)
            unit[torch.arange(len(chunk_rows), device=self.center.device), chunk_rows] = 1
            A = unit.view((1, len(chunk_rows)) + shape)  # batch-independent until the first ReLU
            lower, upper = self.bounds(A, value)
            lowers.append(lower)
            uppers.append(upper)
        return torch.cat(lowers, 1), torch.cat(uppers, 1)

    def _window_bounds(self, value: int, pairs: Tensor, chunk_elements: int) -> tuple[Tensor, Tensor]:
        """CROWN bounds [P] of the (example, flat neuron) ``pairs`` [P, 2] of feature map ``value``,
        on local coefficients, a chunk of pairs per backward pass (the widest window, measured by
        a pass of one pair, sets the chunk)."""
        widest = self._window_pass(value, pairs[:1])[1]
        chunk = max(1, chunk_elements // (2 * widest))
        lowers, uppers = [], []
        for begin in range(0, len(pairs), chunk):
            both = self._window_pass(value, pairs[begin : begin + chunk])[0]
            count = len(both) // 2
            lowers.append(both[:count])
            uppers.append(-both[count:])
        return torch.cat(lowers), torch.cat(uppers)

    def _window_pass(self, value: int, pairs: Tensor) -> tuple[Tensor, int]:
        """Lower bounds [2P] of ``+z`` then ``−z`` for each pair's neuron z, and the most coefficients
        any window of the pass held."""
        start, positions = unit_windows(self.context.shapes[value], pairs[:, 1], self.center.dtype)
        context = WindowContext(
            example=pairs[:, 0].repeat(2),
            position=positions,
            bn_affine=self.context.bn_affine,
            relu_bounds=self.context.relu_bounds,
            shapes=self.context.shapes,
            lines=self.relu_lines,
        )
        pending: dict[int, Window] = {value: start}
        offset = torch.zeros(len(context.example), dtype=self.center.dtype, device=self.center.device)
        widest = start.A.numel()
        for op in reversed(self.plan.ops[:value]):
            window = pending.pop(op.index + 1, None)
            if window is None:
                continue
            inputs, term = op.backward_window(context, window)
            if term is not None:
                offset = offset + term
            for src, window_in in zip(op.src, inputs):
                pending[src] = pending[src].plus(window_in) if src in pending else window_in
                widest = max(widest, pending[src].A.numel())
        return concretize(context, pending.pop(0), self.center, self.radius) + offset, widest


def refine(
    model: nn.Module,
    ibp: BoundPass,
    x_lower: Tensor,
    x_upper: Tensor,
    C: Tensor | None,
    method: str,
    intersect_ibp: bool = False,
    chunk_elements: int | None = None,
) -> BoundPass:
    """Replace the bounds of an IBP traversal by CROWN-IBP or CROWN bounds of the logits / ``C @ logits``.

    ``pre_activation`` of the result holds the intermediate bounds used (IBP for CROWN-IBP,
    CROWN for CROWN); the clean logits and the BatchNorm statistics are those of ``ibp``.
    ``intersect_ibp``: intersect the intermediate and final bounds with IBP's (never looser than
    IBP; module docstring).
    """
    if method not in REFINED_METHODS:
        raise ValueError(f"refine: method must be one of {REFINED_METHODS}, got {method!r}")
    if ibp.context is None:
        raise ValueError("refine needs the PassContext of an IBP bound_pass (BoundPass.context is None)")
    backward = BackwardPass(model, ibp.context, x_lower, x_upper)
    if method == "crown":
        backward.tighten_intermediate(chunk_elements, intersect_ibp)
    A = _output_identity(ibp.clean) if C is None else C.to(ibp.clean.dtype)
    lower, upper = backward.bounds(A)
    if intersect_ibp:
        lower, upper = torch.maximum(lower, ibp.lower), torch.minimum(upper, ibp.upper)
    return dataclasses.replace(ibp, lower=lower, upper=upper, pre_activation=backward.pre_activation)


def _output_identity(clean: Tensor) -> Tensor:
    """A [B, K, K] for bounds of the logits themselves."""
    if clean.dim() != 2:
        raise ValueError(f"CROWN bounds of the raw output need a [B, K] output, got {tuple(clean.shape)}; pass C")
    eye = torch.eye(clean.shape[1], dtype=clean.dtype, device=clean.device)
    return eye.expand(clean.shape[0], -1, -1)


def _tighten_pairs(
    ibp: Tensor,
    index: tuple[Tensor, Tensor],
    crown: Tensor,
    tighter: Callable[[Tensor, Tensor], Tensor] | None,
) -> Tensor:
    """IBP bounds [B, *S] with the (example, flat position) pairs ``index`` replaced by the CROWN
    bounds [P] there, or by the tighter of the two when ``tighter`` is given."""
    flat = ibp.flatten(1)
    values = crown if tighter is None else tighter(flat[index], crown)
    return flat.index_put(index, values).view_as(ibp)


def _windowed_values(plan: Plan, shapes: list[tuple[int, ...]]) -> set[int]:
    """Plan values bounded on local coefficients: [C, H, W] maps whose every ancestor op has a
    window rule (convolution, BatchNorm, ReLU, residual sum) and reads [C, H, W] maps."""
    windowed = {0} if len(shapes[0]) == 3 else set()
    for op in plan.ops:
        if op.windowed and len(shapes[op.index + 1]) == 3 and all(src in windowed for src in op.src):
            windowed.add(op.index + 1)
    return windowed


def _exact_under_ibp(plan: Plan) -> set[int]:
    """Plan values that IBP bounds exactly over a box: one Linear/Conv from the input, with any
    BatchNorm (a per-channel scale) or Flatten around it. Two affine layers in a row are not
    exact (``|W2||W1| ≥ |W2 W1|``), nor is anything after a ReLU or a residual Add."""
    depth = {0: 0}  # affine layers between the input and each value, absent = not affine in x
    for op in plan.ops:
        if isinstance(op, (BatchNormOp, FlattenOp)) and op.src[0] in depth:
            depth[op.index + 1] = depth[op.src[0]]
        elif isinstance(op, (LinearOp, ConvOp)) and depth.get(op.src[0]) == 0:
            depth[op.index + 1] = 1
    return set(depth)


def _value_shapes(plan: Plan, input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Shape (without batch) of every plan value: the input's, then each op's output."""
    shapes = [input_shape]
    for op in plan.ops:
        shapes.append(op.output_shape(*[shapes[i] for i in op.src]))
    return shapes


def _concretize(A: Tensor, center: Tensor, radius: Tensor, offset: Tensor | None) -> Tensor:
    """``min over the box of Σ A·x + offset = A·center − |A|·radius + offset``, [B, M]."""
    flat = A.flatten(2)
    value = torch.matmul(flat, center.flatten(1).unsqueeze(-1)) - torch.matmul(
        flat.abs(), radius.flatten(1).unsqueeze(-1)
    )
    value = value.squeeze(-1)
    return value if offset is None else value + offset
