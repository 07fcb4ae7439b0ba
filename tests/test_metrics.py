"""Metrics on a hand-built accuracy sequence."""

import numpy as np
import pytest
import torch

from cil.metrics import (
    average_accuracy,
    average_forgetting,
    average_incremental_accuracy,
    forgetting,
    format_matrix,
    task_accuracies,
)

ACC = np.array([[0.9, 0.0, 0.0],
                [0.7, 0.8, 0.0],
                [0.75, 0.5, 0.6]])


def test_forgetting_by_hand():
    f = forgetting(ACC)
    assert f[0, 0] == 0 and f[1, 1] == 0 and f[2, 2] == 0
    assert f[1, 0] == pytest.approx(0.2)
    assert f[2, 0] == pytest.approx(0.9 - 0.75)   # max over earlier rows, not the previous one
    assert f[2, 1] == pytest.approx(0.3)


def test_averages_by_hand():
    assert average_accuracy(ACC, 0) == pytest.approx(0.9)
    assert average_accuracy(ACC, 1) == pytest.approx(0.75)
    assert average_accuracy(ACC, 2) == pytest.approx((0.75 + 0.5 + 0.6) / 3)
    assert average_incremental_accuracy(ACC) == pytest.approx((0.9 + 0.75 + 1.85 / 3) / 3)
    f = forgetting(ACC)
    assert average_forgetting(f, 0) == 0.0
    assert average_forgetting(f, 2) == pytest.approx((0.15 + 0.3) / 2)


def test_task_aware_vs_agnostic_counts_and_tag_never_above_taw():
    # two heads of 2 classes; samples of task 1 (global labels 2, 3)
    head0 = torch.tensor([[5.0, 0.0], [0.0, 0.1], [0.0, 0.0]])
    head1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    y = torch.tensor([2, 3, 3])
    taw, tag = task_accuracies([head0, head1], y, [0, 2], eval_task=1)
    assert taw.item() == 2    # within head 1: predictions 2, 3, 2
    assert tag.item() == 1    # over all: 0, 3, 2
    rng = torch.Generator().manual_seed(0)
    for _ in range(20):
        h0, h1 = torch.randn(50, 3, generator=rng), torch.randn(50, 4, generator=rng)
        yy = torch.randint(3, 7, (50,), generator=rng)
        a, b = task_accuracies([h0, h1], yy, [0, 3], eval_task=1)
        assert b.item() <= a.item()


def test_format_matrix_averages_like_facil():
    text = format_matrix("TAg Forg", forgetting(ACC), 2, forgetting=True).splitlines()
    assert text[0] == "TAg Forg"
    assert text[3].endswith("Avg.:  22.5%")   # mean of 15% and 30%, the diagonal left out
    assert format_matrix("TAg Acc", ACC, 1).splitlines()[2].endswith("Avg.:  75.0%")
