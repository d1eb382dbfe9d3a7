"""Plain image classifiers for square grey images (28x28 MNIST / Fashion-MNIST): inputs uint8 or float 0-255."""
from __future__ import annotations

from torch import nn


class Scale(nn.Module):
    def forward(self, x):
        return x.float() / 255.0


def mlp(hidden=(400, 400), n_classes: int = 10, side: int = 28) -> nn.Sequential:
    """Flatten -> side*side (784) -> hidden... -> n_classes ReLU MLP."""
    layers, width = [Scale(), nn.Flatten()], side * side
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, n_classes))


def lenet(n_classes: int = 10) -> nn.Sequential:
    """A LeNet-style CNN: two conv + max-pool stages, then two Linear layers."""
    return nn.Sequential(
        Scale(), nn.Unflatten(1, (1, 28)),
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, n_classes))
