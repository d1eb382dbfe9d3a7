import torch

from pyrobnn import metrics


def test_auroc_known_values():
    assert metrics.auroc([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert metrics.auroc([0.8, 0.9], [0.1, 0.2]) == 0.0
    assert metrics.auroc([0.5, 0.5], [0.5, 0.5]) == 0.5  # all tied
    assert metrics.auroc([0.1, 0.4, 0.35], [0.8, 0.3]) == 4 / 6  # 4 of 6 pairs ordered


def test_auroc_matches_pairwise_count():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(300, generator=g), torch.randn(200, generator=g) + 0.7
    pairs = (b[None, :] > a[:, None]).double().mean()
    assert abs(metrics.auroc(a, b) - float(pairs)) < 1e-9
