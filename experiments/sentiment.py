"""Seed 000: a Bayesian LSTM sentiment classifier (Embedding -> LSTM -> softmax layer, every weight
Bayesian) on the UCI "Sentiment Labelled Sentences" (amazon / imdb / yelp, 1000 each).

Reports accuracy, NLL, Brier and ECE for the Bayesian net and the same net trained
deterministically on a held-out split of all three sources, the accuracy-vs-fraction-retained
curves, and an out-of-domain check: a second model trained on two sources scores predictive entropy
and mutual information on the held-out part of its own sources, on the third source, and on its
own held-out sentences with their words shuffled.

Data: the three ``*_labelled.txt`` files (``sentence<TAB>label`` per line, read with no quote
handling: imdb's lines contain unbalanced quotes). Without a folder the experiment runs on a small
SIMULATED corpus of template sentences, labelled as such.
"""
from __future__ import annotations

import copy
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch

import pyrobnn
from pyrobnn import metrics, plots, priors
from pyrobnn.checkpoint import save_posterior
from pyrobnn.models.sequence import SentimentLSTM
from pyrobnn.runs import EpochLog, write_json
from pyrobnn.text import Vocabulary

from . import open_run_dir, print_model_table, stop_if_interrupted, train_plain, write_results
from .options import device_option, option, out_option, seed_option

SOURCES = {"amazon": "amazon_cells_labelled.txt", "imdb": "imdb_labelled.txt", "yelp": "yelp_labelled.txt"}
FRACTIONS = [i / 100 for i in range(0, 55, 5)]


@dataclass
class SentimentConfig:
    data_dir: str | None = option(None, "folder with the three *_labelled.txt files (default: "
                                        "$PYROBNN_SENTIMENT_DIR, else simulated)")
    test_fraction: float = 0.2
    # the out-of-domain check trains on the other two sources
    ood_source: str = option("imdb", "source held out for the out-of-domain check", choices=sorted(SOURCES))
    max_len: int = 40
    min_count: int = 2            # rarer training words map to the unknown-word id
    embed: int = 64
    hidden: int = 32
    epochs: int = option(30, "SVI epochs", minimum=1)
    det_epochs: int = option(8, "baseline epochs", minimum=1)
    batch_size: int = 64
    lr: float = option(0.01, "initial learning rate")
    final_lr: float = 0.001
    prior_scale: float = 0.5
    init_scale: float = 1e-3
    num_samples: int = option(200, "posterior draws", minimum=1)
    seed: int = seed_option()
    device: str = device_option()
    out: str = out_option()
    progress: bool = True


def read_sentences(path) -> tuple[list[str], list[int]]:
    """``sentence<TAB>label`` lines (label 0 or 1); quotes are plain characters. Lines end at
    ``\n`` only: imdb's sentences contain U+0085, which ``str.splitlines`` would treat as a break."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sentiment file not found: {path}")
    texts, labels = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        text, sep, label = line.rpartition("\t")
        if not sep or label.strip() not in ("0", "1"):
            raise ValueError(f"{path.name} line {n}: expected 'sentence<TAB>0|1'; got {line[:60]!r}")
        texts.append(text.strip())
        labels.append(int(label))
    return texts, labels


_SIM = {  # SIMULATED corpus: per source, nouns; shared sentiment phrases
    "amazon": ["phone", "battery", "headset", "charger", "case", "screen"],
    "imdb": ["movie", "plot", "acting", "script", "film", "soundtrack"],
    "yelp": ["food", "service", "waiter", "pasta", "place", "dessert"],
}
_GOOD = ["great", "excellent", "wonderful", "really good", "amazing", "perfect", "a pleasure"]
_BAD = ["terrible", "awful", "really bad", "disappointing", "a waste", "horrible", "poor"]


def simulated_corpus(seed: int = 0, per_source: int = 400) -> dict[str, tuple[list[str], list[int]]]:
    """SIMULATED template sentences with 10% label noise, so accuracy cannot reach 1."""
    rng = random.Random(seed)
    out = {}
    for src, nouns in _SIM.items():
        texts, labels = [], []
        for _ in range(per_source):
            y = rng.randrange(2)
            word = rng.choice(_GOOD if y else _BAD)
            texts.append(rng.choice(["the {n} was {w}", "{w} {n} !", "i found the {n} {w}", "this {n} is {w}"])
                         .format(n=rng.choice(nouns), w=word))
            labels.append(y if rng.random() > 0.1 else 1 - y)
        out[src] = (texts, labels)
    return out


def load_corpus(cfg: SentimentConfig):
    folder = cfg.data_dir or os.environ.get("PYROBNN_SENTIMENT_DIR")
    if not folder:
        return simulated_corpus(cfg.seed), "SIMULATED template sentences (no --data-dir given)"
    return {s: read_sentences(Path(folder) / f) for s, f in SOURCES.items()}, f"UCI sentiment sentences ({folder})"


def _split(n: int, test_fraction: float, seed: int):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = round(test_fraction * n)
    return perm[n_test:], perm[:n_test]


def build_bayesian(net: SentimentLSTM, cfg: SentimentConfig):
    """(bnn, guide): every weight of ``net`` Bayesian with N(0, prior_scale) priors, a mean-field guide."""
    pyro.clear_param_store()
    bnn = pyrobnn.lift(net, prior=priors.Normal(0.0, cfg.prior_scale), likelihood=pyrobnn.likelihoods.Categorical(2))
    return bnn, pyrobnn.MeanFieldNormal(bnn, init_scale=cfg.init_scale)


def _train_bayesian(net, x, y, cfg, checkpoint, resume, callback=None):
    bnn, guide = build_bayesian(net, cfg)
    steps = cfg.epochs * -(-len(y) // cfg.batch_size)
    hist = pyrobnn.fit(bnn, guide, (x, y), epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed,
                       device=cfg.device, progress=cfg.progress, optimizer="clipped_adam",
                       lr_decay=(cfg.final_lr / cfg.lr) ** (1 / steps), checkpoint=checkpoint, resume=resume,
                       callback=callback)
    return bnn, guide, hist


def _train_deterministic(net, x, y, cfg):
    return train_plain(net, x, y, cfg.det_epochs, cfg.lr, cfg.batch_size,
                       torch.Generator().manual_seed(cfg.seed)).eval()


def shuffle_words(texts: list[str], seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for t in texts:
        words = t.split()
        rng.shuffle(words)
        out.append(" ".join(words))
    return out


def run(cfg: SentimentConfig, resume_dir=None) -> dict:
    if not 0 < cfg.test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1); got {cfg.test_fraction}")
    if cfg.ood_source not in SOURCES:
        raise ValueError(f"ood_source must be one of {sorted(SOURCES)}; got {cfg.ood_source!r}")
    corpus, source = load_corpus(cfg)
    run_dir = open_run_dir(cfg, cfg.out, "sentiment", resume_dir)
    torch.manual_seed(cfg.seed)

    # 1. all three sources, held-out split
    texts = [t for s in SOURCES for t in corpus[s][0]]
    labels = torch.tensor([v for s in SOURCES for v in corpus[s][1]])
    tr, te = _split(len(texts), cfg.test_fraction, cfg.seed)
    vocab = Vocabulary.build([texts[i] for i in tr], cfg.min_count)
    x = vocab.encode(texts, cfg.max_len)
    net = SentimentLSTM(len(vocab), cfg.embed, cfg.hidden)
    det = _train_deterministic(copy.deepcopy(net), x[tr], labels[tr], cfg)
    with torch.no_grad():
        det_probs = torch.softmax(det(x[te]), -1)
    bnn, guide, hist = _train_bayesian(net, x[tr], labels[tr], cfg, run_dir / "train_state.pt", resume_dir is not None,
                                       EpochLog(run_dir))
    stop_if_interrupted(hist, run_dir)
    pp = pyrobnn.predict(bnn, guide, x[te], num_samples=cfg.num_samples, seed=cfg.seed)
    probs, y_te = pp.mean_probs(), labels[te]
    res = {"source": source, "n_train": len(tr), "n_test": len(te), "vocabulary": len(vocab),
           "deterministic": metrics.classification_report(det_probs, y_te),
           "bayesian": metrics.classification_report(probs, y_te)}
    curves = {
        "predictive entropy": metrics.referral_curve(probs, y_te, pp.predictive_entropy(), FRACTIONS),
        "mutual information": metrics.referral_curve(probs, y_te, pp.mutual_information(), FRACTIONS),
        "oracle": metrics.oracle_referral_curve(probs, y_te, FRACTIONS),
        "random": [res["bayesian"]["accuracy"]] * len(FRACTIONS),
    }
    res["referral"] = {"fractions": FRACTIONS, **curves}
    save_posterior(run_dir / "posterior.pt", bnn, guide, x[:1], meta={"experiment": "sentiment"})
    (run_dir / "vocabulary.json").write_text(json.dumps(vocab.words) + "\n")
    write_json(run_dir / "history.json", hist.records)

    # 2. out of domain: train on the two other sources, score the third and shuffled sentences
    in_src = [s for s in SOURCES if s != cfg.ood_source]
    texts_in = [t for s in in_src for t in corpus[s][0]]
    labels_in = torch.tensor([v for s in in_src for v in corpus[s][1]])
    tr2, te2 = _split(len(texts_in), cfg.test_fraction, cfg.seed)
    vocab2 = Vocabulary.build([texts_in[i] for i in tr2], cfg.min_count)
    x_in = vocab2.encode(texts_in, cfg.max_len)
    torch.manual_seed(cfg.seed)
    bnn2, guide2, hist2 = _train_bayesian(SentimentLSTM(len(vocab2), cfg.embed, cfg.hidden), x_in[tr2], labels_in[tr2],
                                          cfg, run_dir / "ood_train_state.pt", resume_dir is not None,
                                          EpochLog(run_dir, "ood_history"))
    stop_if_interrupted(hist2, run_dir)
    held_out = [texts_in[i] for i in te2]
    sets = {f"{'+'.join(in_src)} held out": (x_in[te2], labels_in[te2]),
            f"{cfg.ood_source} (other domain)": (vocab2.encode(corpus[cfg.ood_source][0], cfg.max_len),
                                                 torch.tensor(corpus[cfg.ood_source][1])),
            "held out, words shuffled": (vocab2.encode(shuffle_words(held_out, cfg.seed), cfg.max_len),
                                         labels_in[te2])}
    scores = {}
    ood = {}
    for name, (xs, ys) in sets.items():
        p = pyrobnn.predict(bnn2, guide2, xs, num_samples=cfg.num_samples, seed=cfg.seed)
        scores[name] = (p.predictive_entropy(), p.mutual_information())
        ood[name] = {"accuracy": metrics.accuracy(p.mean_probs(), ys),
                     "mean_entropy": float(scores[name][0].mean()),
                     "mean_mutual_information": float(scores[name][1].mean()),
                     "unknown_word_share": float((xs == 1).sum() / (xs != 0).sum())}
    in_name = next(iter(sets))
    for name in list(sets)[1:]:
        ood[name]["auroc_entropy"] = metrics.auroc(scores[in_name][0], scores[name][0])
        ood[name]["auroc_mutual_information"] = metrics.auroc(scores[in_name][1], scores[name][1])
    res["out_of_domain"] = ood
    ood_name = list(sets)[1]
    figs = {
        "referral.png": plots.referral_curves(FRACTIONS, curves, "Sentiment: accuracy vs fraction referred"),
        "reliability_bayesian.png": plots.reliability_diagram(
            metrics.reliability_bins(probs, y_te), f"Bayesian LSTM (ECE {res['bayesian']['ece']:.3f})"),
        "reliability_deterministic.png": plots.reliability_diagram(
            metrics.reliability_bins(det_probs, y_te), f"Deterministic LSTM (ECE {res['deterministic']['ece']:.3f})"),
        "ood_scores.png": plots.score_histograms(
            {"predictive entropy": (scores[in_name][0], scores[ood_name][0]),
             "mutual information": (scores[in_name][1], scores[ood_name][1])}, in_name, ood_name),
    }
    for name, fig in figs.items():
        fig.savefig(run_dir / name, dpi=100)
    plots.plt.close("all")
    write_results(run_dir, res)
    return {**res, "run_dir": str(run_dir)}


def print_summary(res: dict) -> None:
    """What ``pyrobnn run sentiment`` prints when the run is done."""
    print(f"data: {res['source']}  ({res['n_train']} train / {res['n_test']} held out)")
    print_model_table(res)
    print(f"{'out-of-domain check':<30}{'accuracy':>9}{'entropy':>9}{'MI':>8}{'AUROC H':>9}{'AUROC MI':>10}")
    for name, r in res["out_of_domain"].items():
        au = [f"{r[k]:.3f}" if k in r else "-" for k in ("auroc_entropy", "auroc_mutual_information")]
        print(f"{name:<30}{r['accuracy']:>9.3f}{r['mean_entropy']:>9.3f}{r['mean_mutual_information']:>8.3f}"
              f"{au[0]:>9}{au[1]:>10}")
    print(f"run directory: {res['run_dir']}")
