"""Spec matrix, robust cross-entropy and verified error."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fastcert.method.losses import certified, robust_ce, spec_matrix


def test_spec_matrix_rows_by_hand() -> None:
    C = spec_matrix(torch.tensor([0, 2]), 3)
    expected = torch.tensor(
        [
            [[1.0, -1.0, 0.0], [1.0, 0.0, -1.0]],  # y=0: e0-e1, e0-e2
            [[-1.0, 0.0, 1.0], [0.0, -1.0, 1.0]],  # y=2: e2-e0, e2-e1
        ]
    )
    assert torch.equal(C, expected)


def test_spec_matrix_gives_margins_in_increasing_j() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (16,), generator=generator)
    logits = torch.randn(16, 10, generator=generator, dtype=torch.float64)
    C = spec_matrix(labels, 10, dtype=torch.float64)
    assert C.shape == (16, 9, 10) and C.dtype == torch.float64
    margins = torch.einsum("bjk,bk->bj", C, logits)
    for b in range(16):
        y = int(labels[b])
        others = [j for j in range(10) if j != y]
        assert torch.equal(margins[b], logits[b, y] - logits[b, others])


def test_spec_matrix_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        spec_matrix(torch.tensor([0]), 1)
    with pytest.raises(ValueError, match="labels"):
        spec_matrix(torch.tensor([0.0, 1.0]), 3)


def test_robust_ce_is_cross_entropy_of_padded_negative_bounds() -> None:
    lb = torch.randn(8, 9, generator=torch.Generator().manual_seed(1)) * 3
    padded = torch.cat([torch.zeros(8, 1), -lb], dim=1)
    zeros = torch.zeros(8, dtype=torch.long)
    assert torch.allclose(robust_ce(lb), F.cross_entropy(padded, zeros))
    per_example = robust_ce(lb, reduction="none")
    assert per_example.shape == (8,)
    assert torch.allclose(per_example, F.cross_entropy(padded, zeros, reduction="none"))
    direct = torch.log1p(torch.exp(-lb).sum(dim=1))
    assert torch.allclose(per_example, direct)


def test_robust_ce_is_stable_for_huge_margins() -> None:
    lb = torch.tensor([[1e4, 1e4, 1e4], [-1e4, -1e4, -1e4], [1e4, -1e4, 0.0]], requires_grad=True)
    loss = robust_ce(lb, reduction="none")
    assert torch.isfinite(loss).all()
    assert loss[0].item() == 0.0
    assert loss[1].item() == pytest.approx(1e4 + math.log(3), rel=1e-6)
    assert loss[2].item() == pytest.approx(1e4, rel=1e-6)
    loss.sum().backward()
    assert torch.isfinite(lb.grad).all()
    # float32 rounding of the large logsumexp limits the gradient's precision to ~1e-5.
    assert torch.allclose(lb.grad[1], torch.full((3,), -1 / 3), atol=1e-4)


def test_robust_ce_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="reduction"):
        robust_ce(torch.zeros(2, 3), reduction="sum")
    with pytest.raises(ValueError, match="margin_lower"):
        robust_ce(torch.zeros(3))


def test_certified_needs_every_margin_strictly_positive() -> None:
    lb = torch.tensor([[1.0, 2.0], [1.0, 0.0], [-1.0, 3.0], [float("nan"), 1.0]])
    assert certified(lb).tolist() == [True, False, False, False]
    verified_error = 1 - certified(lb).float().mean()
    assert verified_error.item() == 0.75
