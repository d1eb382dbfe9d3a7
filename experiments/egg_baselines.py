"""Context for the egg experiment's held-out accuracy: standard classifiers on the same split.

Each scikit-learn classifier is scored by 10-fold cross-validation on the training rows and on the
seed's hold-out (the last 50 rows), and every block of 50 consecutive rows is scored once with the
others as training data. It shows how hard the hold-out is compared with the rest of the file.

    .venv/bin/python -m pyrobnn.experiments.egg_baselines --data ../shared/data/egg_times/egg_times.csv
"""
from __future__ import annotations

import argparse

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler
from sklearn.svm import SVC

from .egg_data import load_egg_csv, split_last


def classifiers() -> dict:
    return {
        "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "cubic logistic regression": make_pipeline(StandardScaler(), PolynomialFeatures(3),
                                                   LogisticRegression(max_iter=5000, C=10)),
        "RBF SVM": make_pipeline(StandardScaler(), SVC()),
        "15 nearest neighbours": make_pipeline(StandardScaler(), KNeighborsClassifier(15)),
        "gradient boosting": GradientBoostingClassifier(random_state=0),
        "random forest": RandomForestClassifier(500, min_samples_leaf=5, random_state=0),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="egg_times.csv")
    ap.add_argument("--holdout", type=int, default=50, help="last rows held out (default %(default)s)")
    args = ap.parse_args(argv)
    df = load_egg_csv(args.data)
    train, test = split_last(df, args.holdout)
    cols = ["weight", "time"]
    print(f"{'classifier':<28}{'10-fold CV (train)':>20}{'hold-out':>10}")
    for name, clf in classifiers().items():
        cv = cross_val_score(clf, train[cols].to_numpy(), train["outcome"].to_numpy(), cv=10).mean()
        clf.fit(train[cols].to_numpy(), train["outcome"].to_numpy())
        print(f"{name:<28}{cv:>20.3f}{clf.score(test[cols].to_numpy(), test['outcome'].to_numpy()):>10.3f}")
    x, y = df[cols].to_numpy(), df["outcome"].to_numpy()
    blocks = []
    for start in range(0, len(y), args.holdout):
        mask = np.ones(len(y), bool)
        mask[start:start + args.holdout] = False
        clf = classifiers()["RBF SVM"].fit(x[mask], y[mask])
        blocks.append(clf.score(x[~mask], y[~mask]))
    print(f"RBF SVM on each block of {args.holdout} rows (the others for training): "
          + " ".join(f"{b:.2f}" for b in blocks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
