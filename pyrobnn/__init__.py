"""pyrobnn: Bayesian neural networks in Pyro.

    from pyrobnn import lift, fit, predict
    bnn = lift(net, prior=priors.Normal(0, 1), likelihood="categorical")
    guide = MeanFieldNormal(bnn)
    fit(bnn, guide, (X, y), epochs=100, lr=1e-2)
    pp = predict(bnn, guide, x, num_samples=5000)
    pp.class_frequencies()
"""
from . import likelihoods, metrics, priors
from .autoguides import MeanFieldNormal, auto_normal, make_guide
from .infer import History, fit
from .lift import BayesianNet, lift
from .predictive import PosteriorPredictive, predict
from .recalibrate import fit_noise_factor, fit_temperature

__all__ = ["lift", "fit", "predict", "BayesianNet", "MeanFieldNormal", "auto_normal", "make_guide",
           "History", "PosteriorPredictive", "fit_noise_factor", "fit_temperature", "priors", "likelihoods", "metrics"]
__version__ = "0.1.0"
