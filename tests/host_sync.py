"""Find, on the CPU, the operations that would make the host wait for a GPU.

On a GPU the host queues kernels and runs ahead; it waits (a *synchronization*) whenever it needs a
value or a size that only the device knows, and a copy of host data to the device can wait too. On
the CPU nothing waits, but the same operations run, so :class:`SyncRecorder` can list them there:

* ``read``: a device value read on the host: ``item``, ``float(t)``, ``if t`` (all through
  ``aten._local_scalar_dense``), ``torch.equal`` (returns a Python bool), ``tolist``, ``numpy``
  and ``cpu`` (seen as tensor methods: on the CPU they dispatch no operation);
* ``shape``: an output whose size depends on the data (``nonzero``, boolean-mask indexing,
  ``masked_select``, the backward of ``masked_scatter``, ``unique``, ...): the host must learn it;
* ``python-data``: ``torch.tensor``/``torch.as_tensor`` of Python numbers (a host-to-device copy
  when the target is a GPU);
* ``host-factory``: a tensor factory called without ``device=``: on a GPU run it is made on the
  host, and mixing it with device tensors copies it over (or fails).

Each event names the operation, the innermost frame of fastcert (or of the benchmarks) that led to
it, and the innermost Python frame (e.g. inside torch.optim), so a test can assert the exact set.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
READS = {aten._local_scalar_dense.default, aten.equal.default, aten.is_nonzero.default}
DATA_DEPENDENT_SHAPES = {
    aten.nonzero.default,
    aten.masked_select.default,
    aten.masked_scatter_backward.default,
    aten._unique2.default,
    aten.unique_consecutive.default,
    aten.unique_dim.default,
    aten.repeat_interleave.Tensor,
    aten.bincount.default,
}
INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
FROM_PYTHON = {aten.lift_fresh.default, aten.lift_fresh_copy.default}
FACTORY_NAMES = {f.__name__ for f in _device_constructors()} - {"tensor", "as_tensor", "asarray"}
OWN_CODE = ("/fastcert/", "/benchmarks/")
MACHINERY = (
    "/torch/utils/",
    "/torch/overrides",
    "/torch/_dynamo/",
    "/torch/_compile.py",
    "/torch/autograd/",
    "/torch/_tensor.py",
)
HOST_COPIES = {torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu}  # read without a dispatched op
THIS_FILE = __file__


@dataclass(frozen=True)
class Event:
    """One synchronizing operation: its kind, its name and where it came from."""

    kind: str
    op: str
    caller: str  # innermost fastcert/benchmarks frame, "module.py:function"
    frame: str  # innermost Python frame outside this module and torch's dispatch machinery

    def __str__(self) -> str:
        return f"{self.kind} {self.op} at {self.caller} ({self.frame})"


def _where() -> tuple[str, str]:
    frame = sys._getframe(2)
    innermost = own = None
    while frame is not None:
        filename = frame.f_code.co_filename
        name = f"{filename.rsplit('/', 1)[-1]}:{frame.f_code.co_name}"
        if filename != THIS_FILE and not any(part in filename for part in MACHINERY):
            innermost = innermost or name
            if own is None and any(part in filename for part in OWN_CODE):
                own = name
        frame = frame.f_back
    return own or "?", innermost or "?"


class _Ops(TorchDispatchMode):
    def __init__(self, events: list[Event]) -> None:
        super().__init__()
        self.events = events

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kind = None
        if func in READS:
            kind = "read"
        elif func in DATA_DEPENDENT_SHAPES:
            kind = "shape"
        elif func in INDEXING and any(
            isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8) for index in args[1]
        ):
            kind = "shape"
        elif func in FROM_PYTHON:
            kind = "python-data"
        if kind is not None:
            self.events.append(Event(kind, str(func.overloadpacket.__name__), *_where()))
        return func(*args, **(kwargs or {}))


class _Factories(TorchFunctionMode):
    def __init__(self, events: list[Event]) -> None:
        super().__init__()
        self.events = events

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in HOST_COPIES:
            self.events.append(Event("read", func.__name__, *_where()))
        elif getattr(func, "__name__", None) in FACTORY_NAMES and "device" not in kwargs:
            self.events.append(Event("host-factory", func.__name__, *_where()))
        return func(*args, **kwargs)


class SyncRecorder:
    """``with SyncRecorder() as recorder: ...`` then ``recorder.events`` / :meth:`counts`."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._modes = (_Factories(self.events), _Ops(self.events))

    def __enter__(self) -> SyncRecorder:
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(kind, error, tb)

    def counts(self) -> Counter[Event]:
        return Counter(self.events)
