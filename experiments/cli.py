"""The ``pyrobnn`` command: the suite's front door.

    pyrobnn list
    pyrobnn run egg [--data egg_times.csv] [--epochs 600] [--guide meanfield] [--seed 0] ...
    pyrobnn run boston --data BostonHousing.csv
    pyrobnn run uci --dataset yacht --splits 20 --data-dir ../shared/data/uci_regression
    pyrobnn run mnist --data-dir ../shared/data/mnist
    pyrobnn run stocks --data-dir ../shared/data/stock_prices --tickers IBM AMZN
    pyrobnn run sentiment --data-dir ../shared/data/sentiment_labelled_sentences
    pyrobnn run continual --data-dir ../shared/data/mnist
    pyrobnn predict runs/egg/<stamp> --input 58,5 --input 60,6.5 [--num-samples 5000] [--plot out.png]
    pyrobnn report runs/egg/<stamp>

``predict`` reloads a finished run's posterior.pt (egg and boston runs) and prints the posterior
predictive at new inputs; ``report`` prints a run's metrics.json as a table.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from pyrobnn.experiments import Interrupted, load_config
from pyrobnn.experiments.inspect_run import predict_parser, report_parser, run_predict, run_report
from pyrobnn.experiments.options import add_options, config_from

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
  pyrobnn run continual --data-dir ../shared/data/mnist
  pyrobnn run boston --data ../shared/data/boston_housing/BostonHousing.csv --conformal 0.9
  pyrobnn predict runs/egg/20261122-101500 --input 58,5 --input 60,6.5   # see pyrobnn predict --help
  pyrobnn report runs/egg/20261122-101500

exit codes: 0 done, 2 bad input, 130/143 interrupted by SIGINT/SIGTERM (state saved, resumable)
"""


# The registry: `pyrobnn run NAME` runs module.run(config, resume_dir=None) with the module's config dataclass built
# from the command line (experiments/options.py), then prints module.print_summary(result). Adding an experiment is
# one file plus one entry here.
EXPERIMENTS = {
    "egg": ("egg", "EggConfig", "seed 001: boiled-egg classifier, deterministic vs Bayesian, class histograms"),
    "boston": ("boston", "BostonConfig", "seed 004: Bayesian regression on Boston housing with credible intervals"),
    "uci": ("uci", "UCIConfig", "UCI regression benchmark (20 standard splits) beside published VI / PBP / MC dropout"),
    "mnist": ("mnist", "MNISTConfig",
              "seed 002: Bayes-by-Backprop MLP or LeNet CNN on MNIST-format images: referral, calibration, OOD"),
    "stocks": ("stocks", "StockConfig",
               "seed 003: Bayesian LSTM forecasting daily closes 7 days ahead with credible bands"),
    "sentiment": ("sentiment", "SentimentConfig",
                  "seed 000: Bayesian LSTM sentiment classifier with referral and out-of-domain checks"),
    "continual": ("continual", "ContinualConfig",
                  "variational continual learning on split MNIST: each posterior the next task's prior"),
    "posterior-quality": ("posterior_quality", "PosteriorQualityConfig",
                          "every approximate posterior of the egg net against NUTS: accuracy, NLL, ECE, distance"),
}


def _experiment(name: str):
    module_name, config_name, _ = EXPERIMENTS[name]
    module = importlib.import_module(f"pyrobnn.experiments.{module_name}")
    return module, getattr(module, config_name)


def _add_run_parser(sub, name: str) -> None:
    _, config = _experiment(name)
    p = sub.add_parser(name, help=EXPERIMENTS[name][2], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p, config)
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue an interrupted run in RUN_DIR with its saved config (other options ignored)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run(args) -> int:
    """Continue the run in ``--resume`` with its saved config (progress bar as this command line says), or start a
    new one from the options."""
    module, config = _experiment(args.experiment)
    cfg = load_config(config, args.resume) if args.resume else config_from(config, args)
    if hasattr(cfg, "progress"):
        cfg.progress = not args.no_progress
    module.print_summary(module.run(cfg, resume_dir=args.resume))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pyrobnn", description="Bayesian neural networks in Pyro: experiments",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments", epilog=EPILOG,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
    run_p = sub.add_parser("run", help="run an experiment", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    exp = run_p.add_subparsers(dest="experiment", required=True)
    for name in EXPERIMENTS:
        _add_run_parser(exp, name)
    predict_parser(sub)
    report_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, (_, _, desc) in EXPERIMENTS.items():
            print(f"{name:<11}{desc}")
        return 0
    try:
        if args.command == "predict":
            return run_predict(args)
        if args.command == "report":
            return run_report(args)
        return _run(args)
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
