"""Boiled-egg data: the real ``egg_times.csv`` loader, and the embedded simulator for a fresh clone.

Real file format (seed 001, Adam Woolf's notebooks): header ``,weight,time,outcome``; weight in
grams, boiling time in minutes, outcome 0 = underdone, 1 = soft, 2 = hard. The seed's protocol
holds out the last 50 rows.

The simulator stands in when no file is given. It reproduces the hidden cause the seed names:
eggs come either straight from the fridge (~4 C) or from a cupboard (~20 C), which is not
recorded, so eggs of the same weight and time can come out differently. Doneness is the time
spent above the setting temperature, which grows with boiling time, shrinks for larger eggs
(heat reaches the centre in a time proportional to mass^(2/3)) and is delayed for cold eggs.
Its class thresholds were set so that the class mix and the time ranges resemble the real file
(real: 32% underdone, 18% soft, 50% hard; simulated: about 27%, 20%, 53%). Every output made from
it is labelled SIMULATED.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pyrobnn.data import check_labels, read_csv

COLUMNS = ["weight", "time", "outcome"]
SIMULATED_LABEL = "SIMULATED eggs (embedded default; pass --data for egg_times.csv)"


def load_egg_csv(path) -> pd.DataFrame:
    """Read and check a real egg_times.csv (columns weight, time, outcome; labels in {0, 1, 2})."""
    df = read_csv(path, COLUMNS, index_col=0)
    check_labels(df["outcome"].to_numpy(), 3, name=f"{getattr(path, 'name', str(path))}: outcome")
    if (df["weight"] <= 0).any() or (df["time"] < 0).any():
        i = int(np.flatnonzero(((df["weight"] <= 0) | (df["time"] < 0)).to_numpy())[0])
        raise ValueError(f"egg data: weight must be > 0 g and time >= 0 min; row {i} has "
                         f"weight={df['weight'].iloc[i]}, time={df['time'].iloc[i]}")
    df["outcome"] = df["outcome"].astype(int)
    return df.reset_index(drop=True)


def simulate_eggs(n: int = 639, seed: int = 0, fridge_share: float = 0.5) -> pd.DataFrame:
    """``n`` simulated eggs with columns weight, time, outcome (and the hidden ``fridge`` flag)."""
    if n < 1:
        raise ValueError(f"n must be >= 1; got {n}")
    rng = np.random.default_rng(seed)
    weight = np.clip(rng.normal(55.0, 5.0, n), 40.0, 70.0).round(1)
    time = np.clip(rng.normal(4.45, 1.75, n), 0.5, 7.6).round(1)
    fridge = rng.random(n) < fridge_share
    delay = np.where(fridge, 0.8, 0.0)  # minutes lost warming a 4 C egg
    doneness = (time - delay) * (55.0 / weight) ** (2.0 / 3.0) + rng.normal(0.0, 0.2, n)
    outcome = np.digitize(doneness, [3.0, 4.0])
    return pd.DataFrame({"weight": weight, "time": time, "outcome": outcome.astype(int), "fridge": fridge})


def split_last(df: pd.DataFrame, holdout: int = 50) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The seed's protocol: the last ``holdout`` rows are the test set."""
    if not 0 < holdout < len(df):
        raise ValueError(f"holdout must be between 1 and {len(df) - 1} rows; got {holdout}")
    return df.iloc[:-holdout], df.iloc[-holdout:]
