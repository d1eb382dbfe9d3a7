"""The ``pyrobnn`` command: the suite's front door.

    pyrobnn list
    pyrobnn run egg [--data egg_times.csv] [--epochs 600] [--guide meanfield] [--seed 0] ...
    pyrobnn run boston --data BostonHousing.csv
    pyrobnn run uci --dataset yacht --splits 20 --data-dir ../shared/data/uci_regression
    pyrobnn run mnist --data-dir ../shared/data/mnist
    pyrobnn run stocks --data-dir ../shared/data/stock_prices --tickers IBM AMZN
    pyrobnn run sentiment --data-dir ../shared/data/sentiment_labelled_sentences
    pyrobnn predict runs/egg/<stamp> --input 58,5 --input 60,6.5 [--num-samples 5000] [--plot out.png]
    pyrobnn report runs/egg/<stamp>

``predict`` reloads a finished run's posterior.pt (egg and boston runs) and prints the posterior
predictive at new inputs; ``report`` prints a run's metrics.json as a table.
"""
from __future__ import annotations

import argparse
import os
import sys

from experiments import Interrupted
from experiments.inspect_run import predict_parser, report_parser, run_predict, run_report

EXPERIMENTS = {
    "egg": "seed 001: boiled-egg classifier, deterministic vs Bayesian, class histograms",
    "boston": "seed 004: Bayesian regression on Boston housing with credible intervals",
    "uci": "UCI regression benchmark (20 standard splits) beside published VI / PBP / MC dropout",
    "mnist": "seed 002: Bayes-by-Backprop MLP or LeNet CNN on MNIST-format images: referral, calibration, OOD",
    "stocks": "seed 003: Bayesian LSTM forecasting daily closes 7 days ahead with credible bands",
    "sentiment": "seed 000: Bayesian LSTM sentiment classifier with referral and out-of-domain checks",
}

EPILOG = """examples:
  pyrobnn run egg                                   # embedded simulated eggs
  pyrobnn run egg --data ../shared/data/egg_times/egg_times.csv --guide handwritten
  pyrobnn run egg --epochs 50 --num-samples 1000 --pyro-baseline-samples 0 --out /tmp/runs
  pyrobnn run egg --resume runs/egg/20261122-101500   # after Ctrl-C / SIGTERM (any experiment)
  pyrobnn run boston --data ../shared/data/boston_housing/BostonHousing.csv
  pyrobnn run uci --dataset yacht --splits 20 --data-dir ../shared/data/uci_regression
  pyrobnn run mnist --data-dir ../shared/data/mnist
  pyrobnn run stocks --data-dir ../shared/data/stock_prices --tickers IBM AMZN
  pyrobnn run sentiment --data-dir ../shared/data/sentiment_labelled_sentences
  pyrobnn predict runs/egg/20261122-101500 --input 58,5 --input 60,6.5   # see pyrobnn predict --help
  pyrobnn report runs/egg/20261122-101500

exit codes: 0 done, 2 bad input, 130/143 interrupted by SIGINT/SIGTERM (state saved, resumable)
"""


def _resume_option(p):
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue an interrupted run in RUN_DIR with its saved config (other options ignored)")


def _common(p, out_default="runs"):
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default %(default)s)")
    p.add_argument("--out", default=out_default, help="output root (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run_or_resume(args, cls, run, make_cfg):
    """Continue the run in ``--resume`` with its saved config (progress bar as this command line says),
    or start a new one with ``make_cfg()``."""
    from experiments import load_config

    if args.resume:
        cfg = load_config(cls, args.resume)
        if hasattr(cfg, "progress"):
            cfg.progress = not args.no_progress
        return run(cfg, resume_dir=args.resume)
    return run(make_cfg())


def _egg_parser(sub):
    from experiments.egg import GUIDES, EggConfig

    d = EggConfig()
    p = sub.add_parser("egg", help=EXPERIMENTS["egg"], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="path to egg_times.csv (default: $PYROBNN_EGG_CSV, else simulated)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="SVI epochs (default %(default)s)")
    p.add_argument("--det-epochs", type=int, default=d.det_epochs, help="baseline epochs (default %(default)s)")
    p.add_argument("--guide", choices=GUIDES, default=d.guide, help="guide (default %(default)s)")
    p.add_argument("--loss", choices=("meanfield", "trace"), default=d.loss,
                   help="TraceMeanField_ELBO or Trace_ELBO (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="minibatch size (default %(default)s)")
    p.add_argument("--num-particles", type=int, default=d.num_particles, help="ELBO particles (default %(default)s)")
    p.add_argument("--num-samples", type=int, default=d.num_samples, help="posterior draws (default %(default)s)")
    p.add_argument("--pyro-baseline-samples", type=int, default=d.pyro_baseline_samples,
                   help="draws for the Pyro Predictive timing, 0 to skip (default %(default)s)")
    _resume_option(p)
    _common(p)


def _run_egg(args) -> int:
    from experiments.egg import EggConfig, run

    res = _run_or_resume(args, EggConfig, run, lambda: EggConfig(
        data=args.data, epochs=args.epochs, det_epochs=args.det_epochs, guide=args.guide, loss=args.loss, lr=args.lr,
        batch_size=args.batch_size, num_particles=args.num_particles, num_samples=args.num_samples,
        pyro_baseline_samples=args.pyro_baseline_samples, seed=args.seed, device=args.device, out=args.out,
        progress=not args.no_progress))
    det, bay, tm = res["deterministic"], res["bayesian"], res["predictive_timing"]
    print(f"data: {res['source']}  ({res['n_train']} train / {res['n_test']} held out)")
    print(f"{'model':<14}{'accuracy':>10}{'NLL':>8}{'Brier':>8}{'ECE':>8}")
    for name, m in (("deterministic", det), ("bayesian", bay)):
        print(f"{name:<14}{m['accuracy']:>10.3f}{m['nll']:>8.3f}{m['brier']:>8.3f}{m['ece']:>8.3f}")
    print(f"class frequencies over {tm['draws']} posterior draws:")
    for q in res["query_eggs"]:
        f = "  ".join(f"{k} {v:.3f}" for k, v in q["class_frequencies"].items())
        print(f"  {q['weight']:g} g, {q['time']:g} min: {f}")
    line = f"predictive: {tm['draws']} draws for 3 eggs in {tm['pyrobnn_seconds'] * 1e3:.1f} ms"
    if tm["pyro_predictive_seconds"]:
        line += (f"; Pyro's sequential Predictive: {tm['pyro_predictive_draws']} draws in "
                 f"{tm['pyro_predictive_seconds']:.2f} s ({tm['speedup_per_draw']:.0f}x slower per draw)")
    print(line)
    print(f"run directory: {res['run_dir']}")
    return 0


def _regression_options(p, steps_default, calibrate_default=0.0):
    p.add_argument("--steps", type=int, default=steps_default, help="optimiser steps (default %(default)s)")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (default %(default)s)")
    p.add_argument("--hidden", type=int, default=50, help="hidden units, one layer (default %(default)s)")
    p.add_argument("--heteroscedastic", action="store_true", help="the net predicts the noise too")
    p.add_argument("--num-samples", type=int, default=1000, help="posterior draws (default %(default)s)")
    p.add_argument("--calibrate", type=float, default=calibrate_default, metavar="FRACTION",
                   help="hold out this fraction of the training rows to choose the noise level, then train on "
                        "all of them (0 = off; default %(default)s)")


def _regression_config(args):
    from experiments.regression import RegressionConfig

    for name in ("steps", "num_samples", "hidden"):
        if getattr(args, name) < 1:
            raise ValueError(f"{name} must be >= 1; got {getattr(args, name)}")
    if not 0 <= args.calibrate < 1:
        raise ValueError(f"--calibrate must lie in [0, 1); got {args.calibrate}")
    return RegressionConfig(hidden=(args.hidden,), steps=args.steps, lr=args.lr, heteroscedastic=args.heteroscedastic,
                            num_samples=args.num_samples, calibrate=args.calibrate, seed=args.seed,
                            device=args.device)


def _boston_parser(sub):
    p = sub.add_parser("boston", help=EXPERIMENTS["boston"], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="BostonHousing.csv (default: $PYROBNN_BOSTON_CSV)")
    p.add_argument("--level", type=float, default=0.95, help="credible interval level (default %(default)s)")
    p.add_argument("--drop-b", action="store_true", help="leave out column b (see the README's ethics note)")
    p.add_argument("--repeats", type=int, default=5,
                   help="random 75/25 splits, seeds SEED, SEED+1, ...; figures show the first (default %(default)s)")
    _regression_options(p, 4000, calibrate_default=0.2)
    _resume_option(p)
    _common(p)


def _run_boston(args) -> int:
    from experiments.boston import BostonConfig, run

    res = _run_or_resume(args, BostonConfig, run, lambda: BostonConfig(
        data=args.data, level=args.level, drop_b=args.drop_b, repeats=args.repeats, model=_regression_config(args),
        out=args.out))
    print(f"Boston housing: {res['n_train']} train / {res['n_test']} test")
    print(f"first split: RMSE {res['rmse']:.3f}  log-likelihood {res['log_likelihood']:.3f}  "
          f"{res['inside_interval']:.1%} of test targets inside their {res['level']:.0%} interval "
          f"(mean width {res['width_95']:.2f})")
    rep = res["repeats"]
    if rep["splits"] > 1:
        print(f"{rep['splits']} random splits (mean ± s.e.): RMSE {rep['rmse'][0]:.3f} ± {rep['rmse'][1]:.3f}  "
              f"log-likelihood {rep['log_likelihood'][0]:.3f} ± {rep['log_likelihood'][1]:.3f}  "
              f"95% coverage {rep['coverage_95'][0]:.3f} ± {rep['coverage_95'][1]:.3f}")
    print(f"run directory: {res['run_dir']}")
    return 0


def _uci_parser(sub):
    from experiments.uci import FOLDERS

    p = sub.add_parser("uci", help=EXPERIMENTS["uci"], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(FOLDERS), required=True, help="UCI data set")
    p.add_argument("--splits", type=int, default=None, help="use the first K splits (default: all)")
    p.add_argument("--data-dir", default=None, help="folder with bostonHousing/, ... (default: $PYROBNN_UCI_DIR)")
    _regression_options(p, 4000)
    _resume_option(p)
    _common(p)


def _run_uci(args) -> int:
    from experiments import load_config
    from experiments.uci import UCIConfig, run, table

    if args.resume:
        res = run(load_config(UCIConfig, args.resume), progress=not args.no_progress, resume_dir=args.resume)
    else:
        res = run(UCIConfig(dataset=args.dataset, splits=args.splits, data_dir=args.data_dir,
                            model=_regression_config(args), out=args.out), progress=not args.no_progress)
    print(table([res]), end="")
    print(f"run directory: {res['run_dir']}")
    return 0


def _mnist_parser(sub):
    from experiments.mnist import MNISTConfig

    d = MNISTConfig()
    p = sub.add_parser("mnist", help=EXPERIMENTS["mnist"], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="folder with the t10k IDX files (default: $PYROBNN_MNIST_DIR, "
                        "else scikit-learn's 8x8 digits)")
    p.add_argument("--n-train", type=int, default=None, help="training images (default: all train-*, or 8000 of t10k)")
    p.add_argument("--n-test", type=int, default=None, help="test images (default: all of t10k, or 2000)")
    p.add_argument("--ood-dir", default=None, help="IDX folder whose t10k images are scored as out-of-distribution")
    p.add_argument("--ood-val-size", type=int, default=0,
                   help="the first N out-of-distribution images are scored against the validation images and "
                        "reported apart; the test images are scored against the rest (default %(default)s)")
    p.add_argument("--arch", choices=("mlp", "cnn"), default=d.arch, help="network (default %(default)s)")
    _resume_option(p)
    p.add_argument("--epochs", type=int, default=d.epochs, help="SVI epochs (default %(default)s)")
    p.add_argument("--det-epochs", type=int, default=d.det_epochs, help="baseline epochs (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate (default %(default)s)")
    p.add_argument("--prior-gain", type=float, default=d.prior_gain,
                   help="priors N(0, gain / sqrt(fan_in)) on every layer (default %(default)s)")
    p.add_argument("--final-lr", type=float, default=None,
                   help="decay the learning rate geometrically to this by the last step (default: constant)")
    p.add_argument("--val-size", type=int, default=0,
                   help="training images set aside to validate on after every epoch (default %(default)s)")
    p.add_argument("--keep-best", choices=("nll", "ece", "brier", "accuracy"), default=None,
                   help="with --val-size: keep the epoch that scored best on this validation metric")
    p.add_argument("--temperature-scale", action="store_true",
                   help="with --val-size: divide every draw's logits by the temperature that fits the validation "
                        "images best (post-hoc calibration)")
    p.add_argument("--num-samples", type=int, default=d.num_samples, help="posterior draws (default %(default)s)")
    _common(p)


def _run_mnist(args) -> int:
    from experiments.mnist import MNISTConfig, run

    for name in ("n_train", "n_test", "epochs", "det_epochs", "num_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    res = _run_or_resume(args, MNISTConfig, run, lambda: MNISTConfig(
        data_dir=args.data_dir, n_train=args.n_train, n_test=args.n_test, ood_dir=args.ood_dir,
        ood_val_size=args.ood_val_size, arch=args.arch,
        epochs=args.epochs, det_epochs=args.det_epochs, lr=args.lr, final_lr=args.final_lr, val_size=args.val_size,
        prior_gain=args.prior_gain, temperature_scale=args.temperature_scale,
        keep_best=args.keep_best, num_samples=args.num_samples, seed=args.seed, device=args.device, out=args.out,
        progress=not args.no_progress))
    print(f"data: {res['source']}  ({res['n_train']} train / {res['n_val']} validation / {res['n_test']} test images)")
    if res["best_epoch"] is not None:
        print(f"kept epoch {res['best_epoch']} (best on the validation images)")
    if res["temperature"] != 1.0:
        print(f"logits divided by the temperature {res['temperature']:.3f} fitted on the validation images; "
              f"Bayesian ECE before: {res['bayesian_before_temperature']['ece']:.3f}")
    print(f"{'model':<14}{'accuracy':>10}{'NLL':>8}{'Brier':>8}{'ECE':>8}")
    for name in ("deterministic", "bayesian"):
        m = res[name]
        print(f"{name:<14}{m['accuracy']:>10.3f}{m['nll']:>8.3f}{m['brier']:>8.3f}{m['ece']:>8.3f}")
    print(f"referring the 5% most uncertain: +{res['gain_at_5pct_entropy']:.3f} accuracy (entropy), "
          f"+{res['gain_at_5pct_mi']:.3f} (mutual information)")
    print("pruning: " + ", ".join(f"{p['fraction']:.0%} -> {p['accuracy']:.3f}" for p in res["pruning"]))
    if "ood_auroc" in res:
        print("out-of-distribution AUROC: " + ", ".join(f"{k} {v:.3f}" for k, v in res["ood_auroc"].items()))
    if "ood_auroc_validation" in res:
        print("  on the validation images: " + ", ".join(
            f"{k} {v:.3f}" for k, v in res["ood_auroc_validation"].items()))
    print(f"run directory: {res['run_dir']}")
    return 0


def _stocks_parser(sub):
    from experiments.stocks import StockConfig

    d = StockConfig()
    p = sub.add_parser("stocks", help=EXPERIMENTS["stocks"], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None,
                   help="folder with <TICKER>_2006-01-01_to_2018-01-01.csv "
                        "(default: $PYROBNN_STOCK_DIR, else SIMULATED)")
    p.add_argument("--tickers", nargs="+", default=list(d.tickers), help="tickers (default %(default)s)")
    p.add_argument("--horizon", type=int, default=d.horizon, help="trading days ahead (default %(default)s)")
    p.add_argument("--window", type=int, default=d.window, help="days in each input window (default %(default)s)")
    p.add_argument("--test-days", type=int, default=d.test_days, help="final days held out (default %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="SVI epochs (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate (default %(default)s)")
    p.add_argument("--homoscedastic", action="store_true", help="one learned noise level instead of a predicted one")
    p.add_argument("--level", type=float, default=d.level, help="band level (default %(default)s)")
    p.add_argument("--k-std", type=float, default=d.k_std, help="k of the mean +- k std band (default %(default)s)")
    p.add_argument("--num-samples", type=int, default=d.num_samples, help="posterior draws (default %(default)s)")
    _resume_option(p)
    _common(p)


def _run_stocks(args) -> int:
    from experiments.stocks import StockConfig, run

    res = _run_or_resume(args, StockConfig, run, lambda: StockConfig(
        data_dir=args.data_dir, tickers=tuple(args.tickers), horizon=args.horizon, window=args.window,
        test_days=args.test_days, epochs=args.epochs, lr=args.lr, heteroscedastic=not args.homoscedastic,
        level=args.level, k_std=args.k_std, num_samples=args.num_samples, seed=args.seed, device=args.device,
        out=args.out, progress=not args.no_progress))
    print(f"{'series':<11}{'test period':>25}{'RMSE':>9}{'naive':>9}{'band cover':>12}{'k-std cover':>13}")
    for tk, r in res["tickers"].items():
        print(f"{tk:<11}{r['test_from'] + ' .. ' + r['test_to']:>25}{r['rmse']:>9.2f}{r['rmse_naive_last_value']:>9.2f}"
              f"{r['coverage_quantile_band']:>12.3f}{r['coverage_k_std_band']:>13.3f}")
    print(f"run directory: {res['run_dir']}")
    return 0


def _sentiment_parser(sub):
    from experiments.sentiment import SOURCES, SentimentConfig

    d = SentimentConfig()
    p = sub.add_parser("sentiment", help=EXPERIMENTS["sentiment"], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None,
                   help="folder with the three *_labelled.txt files (default: $PYROBNN_SENTIMENT_DIR, else simulated)")
    p.add_argument("--ood-source", choices=sorted(SOURCES), default=d.ood_source,
                   help="source held out for the out-of-domain check (default %(default)s)")
    p.add_argument("--epochs", type=int, default=d.epochs, help="SVI epochs (default %(default)s)")
    p.add_argument("--det-epochs", type=int, default=d.det_epochs, help="baseline epochs (default %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr, help="initial learning rate (default %(default)s)")
    p.add_argument("--num-samples", type=int, default=d.num_samples, help="posterior draws (default %(default)s)")
    _resume_option(p)
    _common(p)


def _run_sentiment(args) -> int:
    from experiments.sentiment import SentimentConfig, run

    for name in ("epochs", "det_epochs", "num_samples"):
        if getattr(args, name) < 1:
            raise ValueError(f"{name.replace('_', '-')} must be >= 1; got {getattr(args, name)}")
    res = _run_or_resume(args, SentimentConfig, run, lambda: SentimentConfig(
        data_dir=args.data_dir, ood_source=args.ood_source, epochs=args.epochs, det_epochs=args.det_epochs,
        lr=args.lr, num_samples=args.num_samples, seed=args.seed, device=args.device, out=args.out,
        progress=not args.no_progress))
    print(f"data: {res['source']}  ({res['n_train']} train / {res['n_test']} held out)")
    print(f"{'model':<14}{'accuracy':>10}{'NLL':>8}{'Brier':>8}{'ECE':>8}")
    for name in ("deterministic", "bayesian"):
        m = res[name]
        print(f"{name:<14}{m['accuracy']:>10.3f}{m['nll']:>8.3f}{m['brier']:>8.3f}{m['ece']:>8.3f}")
    print(f"{'out-of-domain check':<30}{'accuracy':>9}{'entropy':>9}{'MI':>8}{'AUROC H':>9}{'AUROC MI':>10}")
    for name, r in res["out_of_domain"].items():
        au = [f"{r[k]:.3f}" if k in r else "-" for k in ("auroc_entropy", "auroc_mutual_information")]
        print(f"{name:<30}{r['accuracy']:>9.3f}{r['mean_entropy']:>9.3f}{r['mean_mutual_information']:>8.3f}"
              f"{au[0]:>9}{au[1]:>10}")
    print(f"run directory: {res['run_dir']}")
    return 0


# --- pyrobnn predict / pyrobnn report: reading a finished run directory ----------------------------

PARSERS = {"egg": _egg_parser, "boston": _boston_parser, "uci": _uci_parser, "mnist": _mnist_parser,
           "stocks": _stocks_parser, "sentiment": _sentiment_parser}
RUNNERS = {"egg": _run_egg, "boston": _run_boston, "uci": _run_uci, "mnist": _run_mnist, "stocks": _run_stocks,
           "sentiment": _run_sentiment}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pyrobnn", description="Bayesian neural networks in Pyro: experiments",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments", epilog=EPILOG,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    run_p = sub.add_parser("run", help="run an experiment", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    exp = run_p.add_subparsers(dest="experiment", required=True)
    for add in PARSERS.values():
        add(exp)
    predict_parser(sub)
    report_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, desc in EXPERIMENTS.items():
            print(f"{name:<11}{desc}")
        return 0
    try:
        if args.command == "predict":
            return run_predict(args)
        if args.command == "report":
            return run_report(args)
        return RUNNERS[args.experiment](args)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        if args.command == "run":
            raise
        print("pyrobnn: interrupted", file=sys.stderr)
        return 130
    except Interrupted as e:
        print(f"interrupted: {e}; training state saved in {e.run_dir}", file=sys.stderr)
        print(f"continue with: pyrobnn run {args.experiment} --resume {e.run_dir}", file=sys.stderr)
        return 130 if e.signal == "SIGINT" else 143
    except (ValueError, FileNotFoundError) as e:
        print(f"pyrobnn: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
