import os
import pickle

import pyro
import pytest
import torch

import pyrobnn
from pyrobnn.checkpoint import load_posterior, read_checkpoint, save_posterior
from pyrobnn.guides.egg import egg_guide
from pyrobnn.models.egg import EggNet


def egg_bnn(hidden=(32, 32)):
    net = EggNet(hidden)
    net.standardize.fit(torch.tensor([[50.0, 2.0], [60.0, 6.0], [55.0, 4.0]]))
    return pyrobnn.lift(net, likelihood=pyrobnn.likelihoods.Categorical(3))


X = torch.tensor([[54.0, 1.5], [53.0, 6.0], [47.9, 2.1]])
Y = torch.tensor([0, 2, 0])


@pytest.mark.parametrize("kind", ["meanfield", "autonormal", "handwritten"])
def test_round_trip_restores_the_same_posterior(tmp_path, kind):
    bnn = egg_bnn()
    guide = egg_guide if kind == "handwritten" else pyrobnn.make_guide(kind, bnn)
    pyrobnn.fit(bnn, guide, (X, Y), epochs=5, lr=0.05, seed=0, progress=False)
    before = pyrobnn.predict(bnn, guide, X, num_samples=200, seed=7).outputs
    save_posterior(tmp_path / "p.pt", bnn, guide, X, meta={"epochs": 5})

    pyro.clear_param_store()
    bnn2 = egg_bnn()
    guide2 = egg_guide if kind == "handwritten" else pyrobnn.make_guide(kind, bnn2)
    meta = load_posterior(tmp_path / "p.pt", bnn2, guide2, X)
    after = pyrobnn.predict(bnn2, guide2, X, num_samples=200, seed=7).outputs
    assert meta == {"epochs": 5}
    torch.testing.assert_close(after, before)
    ck = read_checkpoint(tmp_path / "p.pt")
    assert ck["structure"]["sites"]["1.weight"]["shape"] == [32, 2]
    assert ck["structure"]["sites"]["1.weight"]["prior"] == {"name": "Normal", "loc": 0.0, "scale": 1.0}
    assert ck["structure"]["likelihood"] == {"name": "Categorical", "num_classes": 3}
    assert ck["versions"]["torch"] == torch.__version__ and ck["versions"]["pyro"] == pyro.__version__


def test_a_different_net_shape_is_refused_naming_the_parameter(tmp_path):
    bnn = egg_bnn()
    save_posterior(tmp_path / "p.pt", bnn, pyrobnn.MeanFieldNormal(bnn), X)
    other = egg_bnn(hidden=(16, 32))
    with pytest.raises(ValueError, match=r"'net.1.weight' has shape \(32, 2\) in the checkpoint, \(16, 2\) here"):
        load_posterior(tmp_path / "p.pt", other, pyrobnn.MeanFieldNormal(other), X)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_payload_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format": "pyrobnn-posterior/1", "bnn": _Payload(marker)}, f, protocol=2)
    bnn = egg_bnn()
    with pytest.raises(ValueError, match="refused, the file holds pickled Python objects"):
        load_posterior(evil, bnn, pyrobnn.MeanFieldNormal(bnn), X)
    assert not marker.exists()
    pickle.loads(evil.read_bytes())  # proof that the file really is armed
    assert marker.exists()


def test_save_is_atomic_a_failed_write_keeps_the_last_good_file(tmp_path, monkeypatch):
    bnn = egg_bnn()
    guide = pyrobnn.MeanFieldNormal(bnn)
    path = save_posterior(tmp_path / "p.pt", bnn, guide, X)
    good = path.read_bytes()

    def crash(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        save_posterior(path, bnn, guide, X)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["p.pt"]  # no temp file left behind


@pytest.mark.parametrize("kind", ["classification", "float64 regression, [N, 1, 5, 5] outputs"])
def test_pyros_autonormal_on_the_model_round_trips(tmp_path, kind):
    """Rebuilt lazily on reload, an AutoNormal on ``bnn.model`` saw no target and took ``obs`` for a latent site
    ("Continuous inference cannot handle discrete sample site 'obs'"); it is now shown one drawn from the model."""
    from pyro.infer.autoguide import AutoNormal
    from torch import nn

    def build():
        if kind == "classification":
            return pyrobnn.lift(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)))
        net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 3, padding=1)).double()
        return pyrobnn.lift(net, likelihood=pyrobnn.likelihoods.Normal(scale=None))

    x = torch.randn(20, 4) if kind == "classification" else torch.randn(20, 1, 5, 5)
    y = torch.randint(0, 3, (20,)) if kind == "classification" else x.clone()
    bnn = build()
    guide = AutoNormal(bnn.model)
    pyrobnn.fit(bnn, guide, (x, y), epochs=5, lr=0.05, progress=False)
    before = pyrobnn.predict(bnn, guide, x, num_samples=4, seed=1).outputs
    save_posterior(tmp_path / "post.pt", bnn, guide, x[:1])
    pyro.clear_param_store()
    bnn2 = build()
    guide2 = AutoNormal(bnn2.model)
    load_posterior(tmp_path / "post.pt", bnn2, guide2, x[:1])
    after = pyrobnn.predict(bnn2, guide2, x, num_samples=4, seed=1).outputs
    assert after.dtype == before.dtype and torch.equal(after, before)
