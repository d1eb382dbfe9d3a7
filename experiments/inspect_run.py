"""``pyrobnn predict`` and ``pyrobnn report``: reload a finished run's posterior and predict at new
inputs; print a run's metrics as a table."""
from __future__ import annotations

import argparse

EXPERIMENT_DIRS = ("egg", "boston", "uci", "mnist", "stocks", "sentiment")

PREDICT_EPILOG = """examples:
  pyrobnn predict runs/egg/20261122-101500 --input 58,5 --input 60,6.5
  pyrobnn predict runs/egg/20261122-101500 --input 47.9,2.1 --num-samples 20000 --seed 1 --plot eggs.png
  pyrobnn predict runs/boston/20261122-101500 --level 0.9 \\
      --input 0.027,0,7.07,0,0.469,6.42,78.9,4.97,2,242,17.8,396.9,9.14

Each --input is one row of comma-separated numbers in the columns the run was trained on, or a
sentence for a sentiment run:
  egg        weight (g), boiling time (min)
  boston     crim, zn, indus, chas, nox, rm, age, dis, rad, tax, ptratio, b, lstat (no b for a --drop-b run)
  sentiment  --input "The battery died after a day." --input "Great food, friendly staff!"
A row that starts with a minus sign is written --input=-1.5,2.
Egg and sentiment runs print, per input, the share of posterior predictive draws in each class, the predictive
entropy and the mutual information (epistemic part), both in nats; boston runs print the
predictive mean, std and central credible interval of the median value (in $1000s).

exit codes: 0 done, 2 bad input (bad --input, missing or unfinished run directory, an experiment
predict does not handle), 130 interrupted
"""

REPORT_EPILOG = """examples:
  pyrobnn report runs/egg/20261122-101500
  pyrobnn report runs/boston/20261122-101500
  pyrobnn report runs/uci-yacht/20261122-101500

Nested metrics are flattened to dotted keys (bayesian.accuracy), floats shown to 4 significant
digits; long lists (calibration curves, per-split results) are summarised by their length.

exit codes: 0 done, 2 missing or unfinished run directory (no metrics.json), 130 interrupted
"""

PREDICTABLE = ("egg", "boston", "sentiment")
EGG_COLUMNS = ("weight (g)", "boiling time (min)")


def predict_parser(sub):
    p = sub.add_parser("predict", help="posterior predictive of a finished run at new inputs",
                       description="Reload the posterior a finished egg or boston run saved (posterior.pt) and "
                                   "print its posterior predictive at new inputs.",
                       epilog=PREDICT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory, e.g. runs/egg/20261122-101500")
    p.add_argument("--input", action="append", required=True, metavar="X1,X2,...",
                   help="one input row, comma-separated; repeat the option for more rows")
    p.add_argument("--num-samples", type=int, default=5000, help="posterior draws (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the draws (default %(default)s)")
    p.add_argument("--level", type=float, default=0.95,
                   help="credible interval level for regression runs (default %(default)s)")
    p.add_argument("--plot", metavar="PNG", default=None,
                   help="also write the class-frequency histogram to this file (classification runs)")


def report_parser(sub):
    p = sub.add_parser("report", help="print a finished run's metrics.json as a table",
                       description="Print the metrics a finished run wrote (metrics.json) as a readable table.",
                       epilog=REPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory, e.g. runs/egg/20261122-101500")


def _experiment_from_path(run_dir) -> str | None:
    """The experiment a run directory belongs to, from where ``open_run_dir`` put it (out/<name>/<stamp>)."""
    from pathlib import Path

    name = Path(run_dir).resolve().parent.name
    if name.startswith("uci-"):
        return "uci"
    return name if name in EXPERIMENT_DIRS else None


def _open_run_dir(run_dir, needs: str):
    """The run directory as a Path, or an error saying what is missing (and how to resume an
    interrupted run) when it lacks config.json or ``needs``."""
    from pathlib import Path

    d = Path(run_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"not a run directory (no config.json): {run_dir}")
    if not (d / needs).is_file():
        exp = _experiment_from_path(d) or "<experiment>"
        if any(d.glob("train_state*.pt")):
            raise ValueError(f"{run_dir} has no {needs}: the run was interrupted before it finished; "
                             f"continue it with: pyrobnn run {exp} --resume {run_dir}")
        raise FileNotFoundError(f"{run_dir} has no {needs}: the run did not finish")
    return d


def _parse_rows(values, columns) -> list[list[float]]:
    import math

    rows = []
    for text in values:
        parts = [s.strip() for s in text.split(",")]
        if len(parts) != len(columns):
            raise ValueError(f"--input {text!r}: expected {len(columns)} comma-separated numbers "
                             f"({', '.join(columns)}); got {len(parts)}")
        row = []
        for col, s in zip(columns, parts):
            try:
                v = float(s)
            except ValueError:
                raise ValueError(f"--input {text!r}: {col} {s!r} is not a number") from None
            if not math.isfinite(v):
                raise ValueError(f"--input {text!r}: {col} must be a finite number; got {s!r}")
            row.append(v)
        rows.append(row)
    return rows


def _load_egg(d, ck):
    """(bnn, guide, info) of an egg run, rebuilt from its config.json and restored from posterior.pt."""
    import pyro
    import torch

    import pyrobnn
    from pyrobnn.checkpoint import restore_model_state
    from pyrobnn.experiments import load_config
    from pyrobnn.experiments.egg import EggConfig, make_guide
    from pyrobnn.models.egg import CLASSES, EggNet

    cfg = load_config(EggConfig, d)
    pyro.clear_param_store()
    bnn = pyrobnn.lift(EggNet(cfg.hidden), prior=pyrobnn.priors.Normal(0.0, cfg.prior_scale),
                       likelihood=pyrobnn.likelihoods.Categorical(len(CLASSES)))
    guide = make_guide(cfg, bnn)
    restore_model_state(ck, bnn, guide, torch.zeros(1, len(EGG_COLUMNS)))
    return bnn, guide, {"columns": EGG_COLUMNS, "classes": CLASSES,
                        "about": f"{cfg.guide} guide, {cfg.epochs} epochs, seed {cfg.seed}"}


def _load_sentiment(d, ck):
    """(bnn, guide, info) of a sentiment run: its net, vocabulary (vocabulary.json) and posterior."""
    import json

    import torch

    from pyrobnn.checkpoint import restore_model_state
    from pyrobnn.experiments import load_config
    from pyrobnn.experiments.sentiment import SentimentConfig, build_bayesian
    from pyrobnn.models.sequence import SentimentLSTM
    from pyrobnn.text import Vocabulary

    cfg = load_config(SentimentConfig, d)
    vocab = Vocabulary(json.loads((d / "vocabulary.json").read_text()))
    bnn, guide = build_bayesian(SentimentLSTM(len(vocab), cfg.embed, cfg.hidden), cfg)
    restore_model_state(ck, bnn, guide, torch.zeros(1, cfg.max_len, dtype=torch.long))
    return bnn, guide, {"classes": ("negative", "positive"), "encode": lambda texts: vocab.encode(texts, cfg.max_len),
                        "about": f"{len(vocab)}-word vocabulary, {cfg.epochs} epochs, seed {cfg.seed}"}


def _load_boston(d, ck):
    """(bnn, guide, info) of a boston run, rebuilt by experiments.regression.build_regressor."""
    import pyro
    import torch

    from pyrobnn.checkpoint import restore_model_state
    from pyrobnn.experiments import load_config
    from pyrobnn.experiments.boston import COLUMNS, BostonConfig
    from pyrobnn.experiments.regression import build_regressor

    cfg = load_config(BostonConfig, d)
    meta = ck["meta"]
    if "y_mean" not in meta or "y_std" not in meta:
        raise ValueError(f"{d}: this boston run did not record its target scaling (runs before 2026-11-22); "
                         "run it again to predict from it")
    columns = tuple(c for c in COLUMNS[:-1] if not (cfg.drop_b and c == "b"))
    pyro.clear_param_store()
    bnn, guide = build_regressor(len(columns), cfg.model)
    restore_model_state(ck, bnn, guide, torch.zeros(1, len(columns)))
    hidden = "-".join(str(h) for h in cfg.model.hidden)
    return bnn, guide, {"columns": columns, "scaling": (float(meta["y_mean"]), float(meta["y_std"])),
                        "noise_factor": float(meta.get("noise_factor", 1.0)),
                        "about": f"{len(columns)}-{hidden}-{bnn.net[-1].out_features} net, seed {cfg.model.seed}"}


def run_predict(args) -> int:
    import json
    from pathlib import Path

    import torch

    import pyrobnn
    from pyrobnn.checkpoint import read_checkpoint
    from pyrobnn.conformal import from_state

    if args.num_samples < 1:
        raise ValueError(f"num-samples must be >= 1; got {args.num_samples}")
    if not 0 < args.level < 1:
        raise ValueError(f"level must lie in (0, 1); got {args.level}")
    d = Path(args.run_dir)
    exp = _experiment_from_path(d) if d.is_dir() else None
    if exp is not None and exp not in PREDICTABLE:
        raise ValueError(f"pyrobnn predict does not handle {exp} runs (it reads {', '.join(PREDICTABLE)} runs): "
                         f"{args.run_dir}")
    d = _open_run_dir(args.run_dir, "posterior.pt")
    ck = read_checkpoint(d / "posterior.pt")
    exp = ck["meta"].get("experiment") or exp
    if exp not in PREDICTABLE:
        raise ValueError(f"pyrobnn predict does not handle {exp or 'this'} runs (it reads "
                         f"{', '.join(PREDICTABLE)} runs): {args.run_dir}")
    if args.plot is not None:
        if exp == "boston":
            raise ValueError(f"--plot draws class-frequency histograms; a {exp} run is a regression")
        if not Path(args.plot).resolve().parent.is_dir():
            raise FileNotFoundError(f"--plot: folder not found: {Path(args.plot).parent}")
    bnn, guide, info = {"egg": _load_egg, "boston": _load_boston, "sentiment": _load_sentiment}[exp](d, ck)
    if exp == "sentiment":  # each --input is a sentence
        x, labels = info["encode"](args.input), [t if len(t) <= 40 else t[:37] + "..." for t in args.input]
    else:
        x = torch.tensor(_parse_rows(args.input, info["columns"]), dtype=torch.float32)
        labels = [f"{w:g} g, {t:g} min" for w, t in x.tolist()] if exp == "egg" else []
    pp = pyrobnn.predict(bnn, guide, x, num_samples=args.num_samples, seed=args.seed)
    conformal = ck["meta"].get("conformal")  # a run calibrated with --conformal
    conformal = from_state(conformal) if conformal else None
    print(f"{exp} run {args.run_dir} ({info['about']})")
    metrics = d / "metrics.json"
    source = json.loads(metrics.read_text()).get("source") if metrics.is_file() else None
    if source:
        print(f"trained on: {source}")
    if exp != "boston":
        freq, ent, mi = pp.class_frequencies(), pp.predictive_entropy(), pp.mutual_information()
        classes = info["classes"]
        width = max(len("input"), *map(len, labels)) + 2
        print(f"posterior predictive over {args.num_samples} draws (seed {args.seed}, net in {pp.mode} mode); "
              f"entropy and mutual information in nats")
        print(f"{'input':<{width}}" + "".join(f"{c:>11}" for c in classes) + f"{'entropy':>10}{'MI':>9}  most likely")
        for i, label in enumerate(labels):
            print(f"{label:<{width}}" + "".join(f"{float(f):>11.4f}" for f in freq[i]) +
                  f"{float(ent[i]):>10.4f}{float(mi[i]):>9.4f}  {classes[int(freq[i].argmax())]}")
        if conformal is not None:
            sets = conformal.predict_sets(pp)
            print(f"conformal {conformal.level:.0%} prediction sets ({conformal.score}, calibrated on "
                  f"{conformal.n_calibration} held-out rows):")
            for i, label in enumerate(labels):
                print(f"{label:<{width}}{{{', '.join(c for c, inside in zip(classes, sets[i].tolist()) if inside)}}}")
        if args.plot:
            from pyrobnn import plots

            fig = plots.class_frequency_histogram(freq, classes, labels, args.num_samples,
                                                  f"Posterior predictive: {args.num_samples} draws per input")
            fig.savefig(args.plot, dpi=110)
            plots.plt.close(fig)
            print(f"histogram: {args.plot}")
    else:
        pp = pp.rescaled(*info["scaling"]).with_noise_factor(info["noise_factor"])
        mean, std = pp.mean(), pp.std()
        lo, hi = pp.interval(args.level)
        print(f"posterior predictive of the median value ($1000s) over {args.num_samples} draws (seed {args.seed}, "
              f"net in {pp.mode} mode)")
        head = f"{args.level:.0%} interval"
        if conformal is not None:
            clo, chi = conformal.interval(pp)
            head = f"{head:<20}  conformal {conformal.level:.0%} ({conformal.score}, {conformal.n_calibration} rows)"
        print(f"{'input':<7}{'mean':>9}{'std':>9}  {head}")
        for i in range(x.shape[0]):
            line = f"{i + 1:<7}{float(mean[i]):>9.3f}{float(std[i]):>9.3f}  " + \
                f"{f'[{float(lo[i]):.3f}, {float(hi[i]):.3f}]':<20}"
            if conformal is not None:
                line += f"  [{float(clo[i]):.3f}, {float(chi[i]):.3f}]"
            print(line.rstrip())
    return 0


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "-"}[value]
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _flatten(value, key: str = "", max_items: int = 5, max_inline: int = 16):
    """(dotted key, text) rows of a metrics dict: dicts flattened; short lists of dicts flattened by
    index; short lists of scalars inline; longer lists summarised by their length."""
    if isinstance(value, dict):
        if not value:
            yield key, "(empty)"
        for k, v in value.items():
            yield from _flatten(v, f"{key}.{k}" if key else str(k), max_items, max_inline)
    elif isinstance(value, list):
        if all(not isinstance(v, (dict, list)) for v in value):
            if len(value) <= max_inline:
                yield key, "[" + ", ".join(_fmt(v) for v in value) + "]"
            else:
                yield key, f"({len(value)} values)"
        elif len(value) <= max_items:
            for i, v in enumerate(value):
                yield from _flatten(v, f"{key}.{i}", max_items, max_inline)
        else:
            fields = sorted({k for v in value if isinstance(v, dict) for k in v})
            yield key, f"({len(value)} entries" + (f" of {', '.join(fields)})" if fields else ")")
    else:
        yield key, _fmt(value)


def run_report(args) -> int:
    import json

    d = _open_run_dir(args.run_dir, "metrics.json")
    try:
        metrics = json.loads((d / "metrics.json").read_text())
        config = json.loads((d / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{args.run_dir}: a JSON file is not readable ({e})") from None
    env = config.get("environment", {})
    seed = config.get("seed", config.get("model", {}).get("seed") if isinstance(config.get("model"), dict) else None)
    about = [f"seed {seed}" if seed is not None else None,
             f"commit {env['git_commit'][:7]}" if env.get("git_commit") else None,
             f"torch {env['torch']}" if env.get("torch") else None,
             f"pyro {env['pyro']}" if env.get("pyro") else None]
    exp = _experiment_from_path(d) or "run"
    print(f"{exp} run {args.run_dir}" + (f" ({', '.join(a for a in about if a)})" if any(about) else ""))
    rows = list(_flatten(metrics)) if isinstance(metrics, dict) else [("metrics", _fmt(metrics))]
    width = max(len("metric"), *(len(k) for k, _ in rows)) + 2
    print(f"{'metric':<{width}}value")
    for k, v in rows:
        print(f"{k:<{width}}{v}")
    return 0
