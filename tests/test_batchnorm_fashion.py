"""A residual BatchNorm CNN (``models.zoo.ResidualBNCNN``), lifted unchanged, trains on real
Fashion-MNIST with 4 vectorised particles and, in the same budget as the same net trained
deterministically (same initial weights, data, epochs, batch size, Adam learning-rate schedule),
reaches test accuracy within 1 point of it with a lower test NLL.

The regime is small data (1,000 training images, 7x7 average-pooled, 60 epochs), where the
deterministic net overfits and its test NLL climbs. Both nets end with 10 epochs at a tenth of the
learning rate so that the BatchNorm running statistics used for the eval-mode test predictions have
caught up with the weights. Scores are over 5,000 test images.
"""
import copy

import pyro
import torch
import torch.nn.functional as F

import pyrobnn
from pyrobnn import likelihoods, metrics, priors
from pyrobnn.data import read_idx
from pyrobnn.models.zoo import ResidualBNCNN
from tests.conftest import fashion_dir

N_TRAIN, N_TEST, BATCH = 1000, 5000, 100
PHASES = [(50, 3e-3), (10, 3e-4)]  # (epochs, Adam learning rate), the same for both nets


def _images(folder, split, n):
    x = read_idx(folder / f"{split}-images-idx3-ubyte.gz")[:n].float().div(255).unsqueeze(1)
    y = read_idx(folder / f"{split}-labels-idx1-ubyte.gz")[:n].long()
    return F.avg_pool2d(x, 4), y  # 28x28 -> 7x7


def _train_deterministic(net, x, y):
    net.train()
    for epochs, lr in PHASES:
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for _ in range(epochs):
            order = torch.randperm(len(x))
            for i in range(0, len(x), BATCH):
                idx = order[i:i + BATCH]
                loss = F.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    net.eval()


def test_bayesian_batchnorm_cnn_matches_accuracy_with_lower_nll_on_fashion_mnist():
    folder = fashion_dir()
    x, y = _images(folder, "train", N_TRAIN)
    x_test, y_test = _images(folder, "t10k", N_TEST)
    mean, std = x.mean(), x.std()
    x, x_test = (x - mean) / std, (x_test - mean) / std

    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    net = ResidualBNCNN(in_ch=1, width=16, blocks=2, n_out=10)
    det = copy.deepcopy(net)  # the same initial weights

    _train_deterministic(det, x, y)
    with torch.no_grad():
        p_det = det(x_test).softmax(-1)
    acc_det, nll_det = metrics.accuracy(p_det, y_test), metrics.nll(p_det, y_test)

    bnn = pyrobnn.lift(net, prior=priors.Normal(0.0, 1.0), likelihood=likelihoods.Categorical(10),
                       priors=priors.fan_in_normal(net, gain=2.0))  # Normal(0, 1) on the BatchNorm affines
    guide = pyrobnn.MeanFieldNormal(bnn, init="net", init_scale=1e-3)
    for seed, (epochs, lr) in enumerate(PHASES):
        pyrobnn.fit(bnn, guide, (x, y), epochs=epochs, lr=lr, batch_size=BATCH, num_particles=4,
                    progress=False, seed=seed)
    steps = sum(e for e, _ in PHASES) * (N_TRAIN // BATCH)
    assert int(net.stem[1].num_batches_tracked) == steps  # trained in train mode, one update per step
    p_bayes = pyrobnn.predict(bnn, guide, x_test, num_samples=20, seed=0).mean_probs()
    acc_bayes, nll_bayes = metrics.accuracy(p_bayes, y_test), metrics.nll(p_bayes, y_test)

    print(f"\nFashion-MNIST, {N_TRAIN} train / {N_TEST} test images: deterministic accuracy {acc_det:.4f} "
          f"NLL {nll_det:.4f}; Bayesian (4 vectorised particles) accuracy {acc_bayes:.4f} NLL {nll_bayes:.4f}")
    assert acc_bayes >= acc_det - 0.01
    assert nll_bayes < nll_det
