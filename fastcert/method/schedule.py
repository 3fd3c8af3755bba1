"""The per-batch ε schedule and the regularizer weight λ (the paper's App. C "Warmup scheduling"; λ: Sec. 3.4).

The schedule is auto_LiRPA's ``SmoothedScheduler`` driven by a global batch counter ``step``
(0 at the first training batch, never reset per epoch): ε = 0 up to the ramp start, then a
β-power curve up to the ``mid`` fraction of the ramp, then a straight line to ε_max whose slope
matches the curve at the switch. It is written as a pure function of the step, in Python floats
with the same operation order as auto_LiRPA, so a resumed run needs no fast-forwarding.

Two cases where auto_LiRPA's arithmetic misbehaves are decided explicitly: a ramp shorter than
1/mid batches (the power part is empty: auto_LiRPA divides by zero; here the line starts at 0),
and the ramp's last step, which auto_LiRPA can leave one ulp below ε_max for some ε_max and N
(here ε = ε_max exactly from the first batch of epoch start+length on, so ``phase`` and ``eps``
agree). Elsewhere the values equal auto_LiRPA's bit for bit.
"""

from __future__ import annotations

import math
import operator

from fastcert.phases import ramp_end
from fastcert.records import Phase


def _integer(name: str, value: object, minimum: int) -> int:
    """``value`` as an int ≥ ``minimum`` (numpy integers accepted; bools and floats are not)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {number}")
    return number


class SmoothedSchedule:
    """ε as a function of the global batch step (auto_LiRPA ``SmoothedScheduler``).

    ``start`` is the 1-based epoch whose batches begin the ramp, ``length`` the ramp length in
    epochs; ε reaches ``eps_max`` at the first batch of epoch ``start + length``.
    """

    def __init__(
        self,
        eps_max: float,
        start: int,
        length: int,
        batches_per_epoch: int,
        mid: float = 0.25,
        beta: float = 4.0,
    ) -> None:
        self.eps_max = float(eps_max)
        if not (math.isfinite(self.eps_max) and self.eps_max >= 0):
            raise ValueError(f"eps_max must be a finite number >= 0, got {eps_max!r}")
        self.start = _integer("start", start, 1)
        self.length = _integer("length", length, 1)
        self.batches_per_epoch = _integer("batches_per_epoch", batches_per_epoch, 1)
        self.mid = float(mid)
        if not 0 <= self.mid < 1:
            raise ValueError(f"mid must lie in [0, 1), got {mid!r}")
        self.beta = float(beta)
        if not (math.isfinite(self.beta) and self.beta >= 2):
            raise ValueError(f"beta must be a finite number >= 2 (as in auto_LiRPA), got {beta!r}")

        n = self.batches_per_epoch
        self.init_step = (self.start - 1) * n
        self.final_step = ramp_end(self.start, self.length) * n
        self.mid_step = int((self.final_step - self.init_step) * self.mid) + self.init_step
        if self.mid_step == self.init_step:  # no power part: the line starts from 0
            self._alpha, self._mid_value = 0.0, 0.0
        else:
            span = self.mid_step - self.init_step
            t = span ** (self.beta - 1.0)
            self._alpha = self.eps_max / ((self.final_step - self.mid_step) * self.beta * t + span * t)
            self._mid_value = self._alpha * span**self.beta

    def __repr__(self) -> str:
        return (
            f"SmoothedSchedule(eps_max={self.eps_max!r}, start={self.start}, length={self.length}, "
            f"batches_per_epoch={self.batches_per_epoch}, mid={self.mid!r}, beta={self.beta!r})"
        )

    def eps(self, step: int) -> float:
        """ε of the training batch with global index ``step`` (0 = first batch of epoch 1)."""
        step = _integer("step", step, 0)
        if step <= self.init_step:
            return 0.0
        if step >= self.final_step:
            return self.eps_max
        if step < self.mid_step:
            return self._alpha * float(step - self.init_step) ** self.beta
        linear = self._mid_value + (self.eps_max - self._mid_value) * (step - self.mid_step) / (
            self.final_step - self.mid_step
        )
        return min(linear, self.eps_max)

    def epoch_eps(self, epoch: int) -> float:
        """ε of the last batch of 1-based ``epoch``: the ε that epoch is evaluated at."""
        epoch = _integer("epoch", epoch, 1)
        return self.eps(epoch * self.batches_per_epoch - 1)

    def phase(self, epoch: int) -> Phase:
        """``eps0`` if every batch of the epoch has ε = 0, ``target`` if every batch has
        ε = ε_max, ``ramp`` otherwise (decided by position, so also defined for ε_max = 0)."""
        epoch = _integer("epoch", epoch, 1)
        if epoch < self.start:
            return Phase.EPS0
        if epoch > ramp_end(self.start, self.length):
            return Phase.TARGET
        return Phase.RAMP


def reg_lambda(eps: float, eps_max: float, lambda0: float, constant: bool = False) -> float:
    """λ = λ0 (1 − ε/ε_max), annealed with the per-batch ε; λ0 if ``constant`` or ε_max = 0."""
    if constant or eps_max == 0:
        return lambda0
    return lambda0 * (1 - eps / eps_max)


def regularizer_active(epoch: int, start: int, length: int) -> bool:
    """The warmup regularizers run in every epoch up to the end of the ramp (ε=0 epochs too)."""
    return epoch <= ramp_end(start, length)


def batches_per_epoch(n_train: int, batch_size: int) -> int:
    """Number of batches per epoch with the last partial batch kept: ceil(n_train/batch_size)."""
    n_train = _integer("n_train", n_train, 1)
    batch_size = _integer("batch_size", batch_size, 1)
    return -(-n_train // batch_size)
