"""Compile a model into a flat plan of ops, cached per model.

The traversal then is a plain loop over a list, with no module dispatch, hooks or graph tracing
at run time. Supported: ``nn.Linear``, ``nn.Conv2d``, ``nn.BatchNorm1d/2d`` (and
``fastcert.method.models.PartialBatchNorm1d/2d``), ``nn.ReLU``, ``nn.Flatten``, ``nn.Identity``, nested
``nn.Sequential`` and residual blocks ``relu(branch(x) + shortcut(x))``
(:class:`fastcert.method.models.Residual`, or any module with exactly the children ``branch``,
``relu`` and optionally ``shortcut`` of the same meaning). Anything else is a ``TypeError``
naming the module's type and path, raised before any computation.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from torch import nn

from fastcert.method.models import Residual

from .ops import AddOp, BatchNormOp, ConvOp, FlattenOp, LinearOp, Op, ReluOp

SUPPORTED = (
    "Linear, Conv2d (zero padding), BatchNorm1d/2d, ReLU, Flatten (batch dim kept), Identity, Sequential, Residual"
)

_LEAF_OPS: tuple[tuple[type[nn.Module], type[Op]], ...] = (
    (nn.Linear, LinearOp),
    (nn.Conv2d, ConvOp),
    (nn.BatchNorm1d, BatchNormOp),
    (nn.BatchNorm2d, BatchNormOp),
    (nn.ReLU, ReluOp),
    (nn.Flatten, FlattenOp),
)


@dataclass(frozen=True)
class Plan:
    """The ops in execution order, which values to drop after each op, and the module snapshot.

    Value 0 is the network input; op ``i`` reads ``ops[i].src`` and writes value ``i + 1``; the
    output is the last value. ``release[i]`` lists values no later op reads (freed early to keep
    the working set small). ``modules`` is ``tuple(model.modules())`` at compile time: the cache
    entry is stale as soon as the module tree changes.
    """

    ops: tuple[Op, ...]
    release: tuple[tuple[int, ...], ...]
    output: int
    modules: tuple[nn.Module, ...]


def is_residual(module: nn.Module) -> bool:
    """True for :class:`fastcert.method.models.Residual` and modules of exactly the same structure."""
    if isinstance(module, Residual):
        return True
    children = dict(module.named_children())
    return (
        set(children) in ({"branch", "relu"}, {"branch", "shortcut", "relu"})
        and isinstance(children["relu"], nn.ReLU)
        and hasattr(module, "shortcut")
    )


class _Compiler:
    def __init__(self) -> None:
        self.ops: list[Op] = []

    def emit(self, cls: type[Op], name: str, module: nn.Module | None, src: tuple[int, ...]) -> int:
        self.ops.append(cls(len(self.ops), name, module, src))
        return len(self.ops)

    def walk(self, module: nn.Module, path: str, src: int) -> int:
        if isinstance(module, nn.Sequential):
            for name, child in module.named_children():
                src = self.walk(child, _join(path, name), src)
            return src
        if isinstance(module, nn.Identity):
            return src
        if is_residual(module):
            return self.residual(module, path, src)
        for module_type, op_type in _LEAF_OPS:
            if isinstance(module, module_type):
                _check_leaf(module, path)
                return self.emit(op_type, path, module, (src,))
        raise TypeError(
            f"fastcert.method.bounds: unsupported module {type(module).__name__} at "
            f"'{path or '<model>'}'; supported: {SUPPORTED}"
        )

    def residual(self, block: nn.Module, path: str, src: int) -> int:
        branch = self.walk(block.get_submodule("branch"), _join(path, "branch"), src)
        shortcut_module = block.shortcut
        assert shortcut_module is None or isinstance(shortcut_module, nn.Module), f"{path}: shortcut is not a module"
        skip = src if shortcut_module is None else self.walk(shortcut_module, _join(path, "shortcut"), src)
        added = self.emit(AddOp, _join(path, "add"), None, (branch, skip))
        return self.emit(ReluOp, _join(path, "relu"), block.get_submodule("relu"), (added,))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check_leaf(module: nn.Module, path: str) -> None:
    if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
        raise TypeError(
            f"fastcert.method.bounds: Conv2d at '{path}' has padding_mode={module.padding_mode!r}; "
            "only 'zeros' is supported"
        )
    if isinstance(module, nn.Flatten) and module.start_dim < 1:
        raise TypeError(
            f"fastcert.method.bounds: Flatten at '{path}' has start_dim={module.start_dim}; "
            "use start_dim >= 1 so that the batch dimension is kept"
        )


def _release_schedule(ops: tuple[Op, ...], output: int) -> tuple[tuple[int, ...], ...]:
    """For each op, the values whose last reader it is (never the output)."""
    last_use: dict[int, int] = {}
    for position, op in enumerate(ops):
        for value in op.src:
            last_use[value] = position
    release: list[list[int]] = [[] for _ in ops]
    for value, position in last_use.items():
        if value != output:
            release[position].append(value)
    return tuple(tuple(values) for values in release)


def compile_plan(model: nn.Module) -> Plan:
    """Compile ``model`` (no caching; see :func:`plan_for`)."""
    compiler = _Compiler()
    output = compiler.walk(model, "", 0)
    ops = tuple(compiler.ops)
    return Plan(ops, _release_schedule(ops, output), output, tuple(model.modules()))


_CACHE: weakref.WeakKeyDictionary[nn.Module, Plan] = weakref.WeakKeyDictionary()


def plan_for(model: nn.Module) -> Plan:
    """The cached plan of ``model``, recompiled when its module tree has changed."""
    plan = _CACHE.get(model)
    if plan is None or not _same_modules(plan.modules, model):
        plan = compile_plan(model)
        _CACHE[model] = plan
    return plan


def _same_modules(snapshot: tuple[nn.Module, ...], model: nn.Module) -> bool:
    current = tuple(model.modules())
    return len(current) == len(snapshot) and all(a is b for a, b in zip(current, snapshot))
