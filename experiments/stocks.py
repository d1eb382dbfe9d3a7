"""Seed 003: a Bayesian LSTM(1 -> 10) + Linear forecasting daily closes 7 trading days ahead.

Windows: the last ``window`` closes before day t, each as its log-ratio to the close of day t (so
every window is normalised by its own level, and a series that trends far above its training range
stays in range), divided by a scale fitted on the training windows. Target: the log-ratio of the
close ``horizon`` days later to day t's close, same scale. The posterior predictive draws are mapped
back to prices (close_t * exp(scale * z)); the bands are the predictive quantiles and the seed's
mean +- k std, both in dollars. The test period is the final ``test_days`` trading days: no
training window's target falls inside it. The naive forecast is the last close.

Data: ``<TICKER>_2006-01-01_to_2018-01-01.csv`` files (Date, ..., Close) from a folder; rows with a
blank Close are dropped and counted (IBM's 2017-07-31 row has blank Open/Low but a Close, and
is kept). Without a folder the experiment runs on a SIMULATED series (geometric Brownian motion
whose volatility switches between calm and turbulent regimes), labelled as such.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyro
import torch

import pyrobnn
from pyrobnn import likelihoods, metrics, plots, priors
from pyrobnn.checkpoint import save_posterior
from pyrobnn.models.sequence import LSTMForecaster
from pyrobnn.runs import EpochLog, write_json

from . import open_run_dir, stop_if_interrupted
from .options import device_option, option, out_option, seed_option


@dataclass
class StockConfig:
    data_dir: str | None = option(None, "folder with <TICKER>_2006-01-01_to_2018-01-01.csv "
                                        "(default: $PYROBNN_STOCK_DIR, else SIMULATED)")
    tickers: tuple = option(("IBM", "AMZN"), "tickers")
    window: int = option(21, "days in each input window")
    horizon: int = option(7, "trading days ahead")
    test_days: int = option(250, "final days held out")
    hidden: int = 10
    # the net predicts the noise scale from the window (volatility changes)
    heteroscedastic: bool = option(True, "one learned noise level instead of a predicted one", flag="--homoscedastic")
    epochs: int = option(60, "SVI epochs")
    batch_size: int = 64
    lr: float = option(0.01, "learning rate")
    num_particles: int = 1
    init_scale: float = 1e-3
    num_samples: int = option(1000, "posterior draws")
    level: float = option(0.95, "band level")
    k_std: float = option(1.96, "k of the mean +- k std band")
    seed: int = seed_option()
    device: str = device_option()
    out: str = out_option()
    progress: bool = True


def read_closes(path) -> tuple[pd.Series, int]:
    """(Close indexed by date, number of rows dropped for a blank Close)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"stock file not found: {path}")
    df = pd.read_csv(path)
    for col in ("Date", "Close"):
        if col not in df.columns:
            raise ValueError(f"{path.name}: missing column {col!r}; columns are {list(df.columns)}")
    close = pd.to_numeric(df["Close"], errors="coerce")
    keep = close.notna() & (close > 0)
    series = pd.Series(close[keep].to_numpy(float), index=pd.to_datetime(df["Date"][keep]), name="close")
    return series.sort_index(), int((~keep).sum())


def simulated_closes(n_days: int = 3000, seed: int = 0) -> pd.Series:
    """SIMULATED prices: geometric Brownian motion, volatility switching between 1% and 3% a day."""
    rng = np.random.default_rng(seed)
    vol, state, out = np.empty(n_days), 0, np.empty(n_days)
    for t in range(n_days):
        if rng.random() < 0.01:
            state = 1 - state
        vol[t] = (0.01, 0.03)[state]
    out = 100 * np.exp(np.cumsum(0.0003 + vol * rng.standard_normal(n_days)))
    return pd.Series(out, index=pd.bdate_range("2006-01-02", periods=n_days), name="close")


def make_windows(close: np.ndarray, window: int, horizon: int):
    """For every day t with a full window and a target: (log-ratio windows [M, window], target
    log-ratios [M], index of day t [M])."""
    logc = np.log(close)
    t = np.arange(window - 1, len(close) - horizon)
    if len(t) == 0:
        raise ValueError(f"the series has {len(close)} days; it needs more than window + horizon = "
                         f"{window + horizon}")
    idx = t[:, None] + np.arange(-window + 1, 1)[None, :]
    return logc[idx] - logc[t][:, None], logc[t + horizon] - logc[t], t


def check_length(close: pd.Series, cfg: StockConfig, name: str) -> None:
    if len(close) < cfg.window + cfg.horizon + cfg.test_days + 100:
        raise ValueError(f"{name}: {len(close)} days is too short for window {cfg.window}, horizon "
                         f"{cfg.horizon}, {cfg.test_days} test days and 100 training windows")


def forecast(close: pd.Series, cfg: StockConfig, name: str, checkpoint=None, resume=False, callback=None):
    """Train on the early windows, forecast the test period; (report, arrays for the figures, bnn, guide, history)."""
    check_length(close, cfg, name)
    values = close.to_numpy()
    x, z, t = make_windows(values, cfg.window, cfg.horizon)
    first_test_day = len(values) - cfg.test_days
    test = t + cfg.horizon >= first_test_day
    train = ~test & (t + cfg.horizon < first_test_day)
    scale = float(z[train].std())
    as_t = lambda a: torch.tensor(a / scale, dtype=torch.float32)  # noqa: E731
    x_tr, z_tr, x_te = as_t(x[train])[..., None], as_t(z[train]), as_t(x[test])[..., None]

    pyro.clear_param_store()
    torch.manual_seed(cfg.seed)
    net = LSTMForecaster(cfg.hidden, n_out=2 if cfg.heteroscedastic else 1)
    if cfg.heteroscedastic:
        lik = likelihoods.Normal(scale=None, heteroscedastic=True)
    else:
        lik = likelihoods.Normal(scale=None, log_scale_prior=priors.Normal(math.log(0.5), 1.0), init_scale=1.0)
    bnn = pyrobnn.lift(net, prior=priors.Normal(0.0, 1.0), likelihood=lik)
    guide = pyrobnn.MeanFieldNormal(bnn, init="net", init_scale=cfg.init_scale)
    hist = pyrobnn.fit(bnn, guide, (x_tr, z_tr), epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                       num_particles=cfg.num_particles, seed=cfg.seed, device=cfg.device, progress=cfg.progress,
                       checkpoint=checkpoint, resume=resume, callback=callback)
    if hist.interrupted:
        return None, None, bnn, guide, hist

    pp = pyrobnn.predict(bnn, guide, x_te, num_samples=cfg.num_samples, seed=cfg.seed)
    base = torch.tensor(values[t[test]], dtype=torch.float32)
    prices = base * torch.exp(scale * pp.draws.cpu())            # [S, N] predictive draws in dollars
    actual = torch.tensor(values[t[test] + cfg.horizon], dtype=torch.float32)
    alpha = (1 - cfg.level) / 2
    lo, hi = torch.quantile(prices, torch.tensor([alpha, 1 - alpha]), dim=0)
    mean, std = prices.mean(0), prices.std(0)
    rep = {
        "n_train_windows": int(train.sum()), "n_test_windows": int(test.sum()),
        "test_from": str(close.index[first_test_day].date()), "test_to": str(close.index[-1].date()),
        "rmse": metrics.rmse(mean, actual), "rmse_naive_last_value": metrics.rmse(base, actual),
        "coverage_quantile_band": metrics.coverage(lo, hi, actual),
        "coverage_k_std_band": metrics.coverage(mean - cfg.k_std * std, mean + cfg.k_std * std, actual),
        "mean_band_width": float((hi - lo).mean()),
        "noise_std_scaled": float(pp.aleatoric_variance().sqrt().mean()),
        "epistemic_std_scaled": float(pp.epistemic_variance().sqrt().mean()),
    }
    rep["rmse_ratio_to_naive"] = rep["rmse"] / rep["rmse_naive_last_value"]
    days = close.index[t[test] + cfg.horizon]
    arrays = {"dates": days, "actual": actual, "mean": mean, "lo": lo, "hi": hi, "std": std}
    return rep, arrays, bnn, guide, hist


def run(cfg: StockConfig, resume_dir=None) -> dict:
    if not 0 < cfg.level < 1:
        raise ValueError(f"level must lie in (0, 1); got {cfg.level}")
    for name in ("window", "horizon", "test_days", "hidden", "epochs", "num_samples"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be >= 1; got {getattr(cfg, name)}")
    folder = cfg.data_dir or os.environ.get("PYROBNN_STOCK_DIR")
    if folder:
        series = {}
        for tk in cfg.tickers:
            s, dropped = read_closes(Path(folder) / f"{tk}_2006-01-01_to_2018-01-01.csv")
            series[tk] = (s, dropped, f"{tk} daily closes ({folder})")
    else:
        series = {"SIMULATED": (simulated_closes(seed=cfg.seed), 0, "SIMULATED prices (no --data-dir given)")}
    for tk, (close, _, _) in series.items():
        check_length(close, cfg, tk)
    run_dir = open_run_dir(cfg, cfg.out, "stocks", resume_dir)
    results = {}
    for tk, (close, dropped, source) in series.items():
        done = run_dir / f"{tk}_metrics.json"
        if resume_dir and done.is_file():  # finished before the interruption
            results[tk] = json.loads(done.read_text())
            continue
        state = run_dir / f"{tk}_train_state.pt"
        rep, arr, bnn, guide, hist = forecast(close, cfg, tk, checkpoint=state,
                                              resume=resume_dir is not None and state.is_file(),
                                              callback=EpochLog(run_dir, f"{tk}_history"))
        stop_if_interrupted(hist, run_dir)
        rep = {"source": source, "rows_dropped_blank_close": dropped, **rep}
        title = (f"{tk}: {cfg.horizon}-day-ahead forecast, {cfg.level:.0%} band covers "
                 f"{rep['coverage_quantile_band']:.0%} of the test period")
        for zoom, fname in ((False, "series"), (True, "zoom")):
            fig = plots.forecast_band(close.index, close.to_numpy(), arr["dates"], arr["mean"], arr["lo"], arr["hi"],
                                      title, zoom=zoom, k_std=(cfg.k_std, arr["std"]))
            fig.savefig(run_dir / f"{tk}_{fname}.png", dpi=110)
        plots.plt.close("all")
        save_posterior(run_dir / f"{tk}_posterior.pt", bnn, guide, torch.zeros(1, cfg.window, 1),
                       meta={"experiment": "stocks", "ticker": tk})
        write_json(run_dir / f"{tk}_history.json", hist.records)
        write_json(done, rep)
        state.unlink(missing_ok=True)
        results[tk] = rep
    write_json(run_dir / "metrics.json", results)
    return {"tickers": results, "run_dir": str(run_dir)}


def print_summary(res: dict) -> None:
    """What ``pyrobnn run stocks`` prints when the run is done."""
    print(f"{'series':<11}{'test period':>25}{'RMSE':>9}{'naive':>9}{'band cover':>12}{'k-std cover':>13}")
    for tk, r in res["tickers"].items():
        print(f"{tk:<11}{r['test_from'] + ' .. ' + r['test_to']:>25}{r['rmse']:>9.2f}{r['rmse_naive_last_value']:>9.2f}"
              f"{r['coverage_quantile_band']:>12.3f}{r['coverage_k_std_band']:>13.3f}")
    print(f"run directory: {res['run_dir']}")
