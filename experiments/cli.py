"""The ``pyrobnn`` command: the suite's front door.

    pyrobnn list
    pyrobnn run egg [--data egg_times.csv] [--epochs 600] [--guide meanfield] [--seed 0] ...
"""
from __future__ import annotations

import argparse
import sys

EXPERIMENTS = {"egg": "seed 001: boiled-egg classifier, deterministic vs Bayesian, class histograms"}

EPILOG = """examples:
  pyrobnn run egg                                   # embedded simulated eggs
  pyrobnn run egg --data ../shared/data/egg_times/egg_times.csv --guide handwritten
  pyrobnn run egg --epochs 50 --num-samples 1000 --pyro-baseline-samples 0 --out /tmp/runs
  pyrobnn run egg --resume runs/egg/20261122-101500   # after Ctrl-C / SIGTERM

exit codes: 0 done, 2 bad input, 130/143 interrupted by SIGINT/SIGTERM (state saved, resumable)
"""


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
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    p.add_argument("--device", default=d.device, help="cpu or cuda (default %(default)s)")
    p.add_argument("--out", default=d.out, help="output root; runs go to OUT/egg/<stamp> (default %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue an interrupted run in RUN_DIR with its saved config (other options ignored)")
    return p


def _run_egg(args) -> int:
    from experiments.egg import EggConfig, config_of, run

    if args.resume:
        cfg = config_of(args.resume)
        cfg.progress = not args.no_progress
        res = run(cfg, resume_dir=args.resume)
        return _report_egg(res)
    cfg = EggConfig(data=args.data, epochs=args.epochs, det_epochs=args.det_epochs, guide=args.guide,
                    loss=args.loss, lr=args.lr, batch_size=args.batch_size, num_particles=args.num_particles,
                    num_samples=args.num_samples, pyro_baseline_samples=args.pyro_baseline_samples,
                    seed=args.seed, device=args.device, out=args.out, progress=not args.no_progress)
    return _report_egg(run(cfg))


def _report_egg(res: dict) -> int:
    if "interrupted" in res:
        print(f"interrupted: {res['interrupted']}; training state saved to {res['train_state']}")
        print(f"continue with: pyrobnn run egg --resume {res['run_dir']}")
        return 130 if "SIGINT" in res["interrupted"] else 143
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="pyrobnn", description="Bayesian neural networks in Pyro: experiments",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments")
    run_p = sub.add_parser("run", help="run an experiment", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    exp = run_p.add_subparsers(dest="experiment", required=True)
    _egg_parser(exp)
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, desc in EXPERIMENTS.items():
            print(f"{name:<8}{desc}")
        return 0
    try:
        return _run_egg(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"pyrobnn: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
