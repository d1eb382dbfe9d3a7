import math

import pytest
import torch

from pyrobnn import metrics


def test_known_values():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    y = torch.tensor([0, 1, 1, 1])
    assert metrics.accuracy(p, y) == 0.5
    assert metrics.nll(p, y) == pytest.approx(-(math.log(0.7) + math.log(0.6) + math.log(0.2) + math.log(0.4)) / 4)
    brier = ((0.09 + 0.04 + 0.01) + (0.01 + 0.16 + 0.09) + (0.04 + 0.64 + 0.36) + (0.25 + 0.36 + 0.01)) / 4
    assert metrics.brier(p, y) == pytest.approx(brier)
    # bins of width 1/15: 0.7 -> bin 10, 0.6 -> bin 8 (two inputs), 0.5 -> bin 7
    ece = (abs(1 - 0.7) + abs((1 + 0) - (0.6 + 0.6)) + abs(0 - 0.5)) / 4
    assert metrics.ece(p, y) == pytest.approx(ece)


def test_ece_of_a_calibrated_predictor_is_near_zero_and_overconfidence_is_caught():
    g = torch.Generator().manual_seed(0)
    n = 200_000
    conf = torch.rand(n, generator=g) * 0.5 + 0.5
    correct = torch.rand(n, generator=g) < conf  # right exactly as often as it claims
    p = torch.stack([conf, 1 - conf], 1)
    y = torch.where(correct, 0, 1)
    assert metrics.ece(p, y) < 0.005
    always_sure = torch.stack([torch.full((n,), 0.99), torch.full((n,), 0.01)], 1)
    assert metrics.ece(always_sure, y) == pytest.approx(0.99 - 0.75, abs=0.01)
