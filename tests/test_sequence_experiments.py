"""The recurrent experiments on real data: stock forecasting (seed 003) and sentiment (seed 000)."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from pyrobnn.experiments import sentiment, stocks
from pyrobnn.text import PAD, UNKNOWN, Vocabulary, tokenize
from tests.conftest import data_file


def test_read_closes_keeps_ibm_row_with_blank_open_and_drops_blank_close(tmp_path):
    ibm = data_file("stock_prices/IBM_2006-01-01_to_2018-01-01.csv")
    close, dropped = stocks.read_closes(ibm)
    assert len(close) == 3020 and dropped == 0
    assert close[pd.Timestamp("2017-07-31")] == pytest.approx(144.67)  # Open and Low are blank there
    f = tmp_path / "X.csv"
    f.write_text("Date,Open,Close\n2017-01-02,1,10\n2017-01-03,2,\n2017-01-04,3,11\n")
    close, dropped = stocks.read_closes(f)
    assert list(close) == [10.0, 11.0] and dropped == 1
    f.write_text("Date,Open\n2017-01-02,1\n")
    with pytest.raises(ValueError, match="missing column 'Close'"):
        stocks.read_closes(f)


def test_windows_are_log_ratios_to_the_last_close():
    close = np.exp(np.arange(40) * 0.01)
    x, z, t = stocks.make_windows(close, window=5, horizon=3)
    assert x.shape == (len(close) - 5 - 3 + 1, 5) and t[0] == 4
    np.testing.assert_allclose(x[0], [-0.04, -0.03, -0.02, -0.01, 0.0], atol=1e-12)
    np.testing.assert_allclose(z, 0.03, atol=1e-12)


def test_stock_forecast_on_real_prices(tmp_path):
    folder = data_file("stock_prices/AMZN_2006-01-01_to_2018-01-01.csv").parent
    cfg = stocks.StockConfig(data_dir=str(folder), tickers=("AMZN",), epochs=2, num_samples=200, out=str(tmp_path),
                             progress=False)
    res = stocks.run(cfg)
    rep = res["tickers"]["AMZN"]
    close, _ = stocks.read_closes(folder / "AMZN_2006-01-01_to_2018-01-01.csv")
    values = close.to_numpy()
    last = values[-cfg.test_days - cfg.horizon:-cfg.horizon]  # the naive forecast of each test day
    naive = math.sqrt(np.mean((values[-cfg.test_days:] - last) ** 2))
    assert rep["n_test_windows"] == cfg.test_days
    assert rep["rmse_naive_last_value"] == pytest.approx(naive, rel=1e-4)
    assert rep["test_from"] == str(close.index[-cfg.test_days].date())
    assert 0 <= rep["coverage_quantile_band"] <= 1 and rep["mean_band_width"] > 0 and math.isfinite(rep["rmse"])
    run_dir = tmp_path / "stocks"
    (run_dir,) = list(run_dir.iterdir())
    for name in ("metrics.json", "AMZN_series.png", "AMZN_zoom.png", "AMZN_posterior.pt", "AMZN_history.json"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "AMZN_train_state.pt").exists()
    assert json.loads((run_dir / "metrics.json").read_text())["AMZN"]["rmse"] == pytest.approx(rep["rmse"])


def test_vocabulary_ids_padding_and_unknown_words():
    assert tokenize("Great phone!! Won't buy again?") == ["great", "phone", "!", "!", "won't", "buy", "again", "?"]
    v = Vocabulary.build(["good good bad", "bad good meh"], min_count=2)
    assert v.words == ["good", "bad"] and len(v) == 4
    x = v.encode(["good meh bad", ""], max_len=4)
    assert x.tolist() == [[2, UNKNOWN, 3, PAD], [PAD] * 4]
    assert v.encode(["bad " * 10], max_len=3).tolist() == [[3, 3, 3]]


def test_read_sentences_handles_imdb_quotes_and_nel_characters():
    folder = data_file("sentiment_labelled_sentences/imdb_labelled.txt").parent
    for name in sentiment.SOURCES.values():
        texts, labels = sentiment.read_sentences(folder / name)
        assert len(texts) == 1000 and sum(labels) == 500, name
    texts, _ = sentiment.read_sentences(folder / "imdb_labelled.txt")
    assert any("\u0085" in t for t in texts)  # kept inside its sentence, not a line break


def test_sentiment_pipeline_on_real_sentences(tmp_path):
    folder = data_file("sentiment_labelled_sentences/imdb_labelled.txt").parent
    cfg = sentiment.SentimentConfig(data_dir=str(folder), epochs=3, det_epochs=1, num_samples=20, out=str(tmp_path),
                                    progress=False)
    res = sentiment.run(cfg)
    assert res["n_train"] == 2400 and res["n_test"] == 600
    ref = res["referral"]
    assert ref["predictive entropy"][0] == pytest.approx(res["bayesian"]["accuracy"])
    assert ref["oracle"] == sorted(ref["oracle"]) and ref["oracle"][-1] == pytest.approx(1.0)
    assert res["bayesian"]["accuracy"] > 0.6  # three epochs already beat chance on 600 held-out sentences
    ood = res["out_of_domain"]
    assert set(ood) == {"amazon+yelp held out", "imdb (other domain)", "held out, words shuffled"}
    assert ood["imdb (other domain)"]["unknown_word_share"] > ood["amazon+yelp held out"]["unknown_word_share"]
    assert all(0 <= ood[k]["auroc_entropy"] <= 1 for k in list(ood)[1:])
    run_dir = next((tmp_path / "sentiment").iterdir())
    for name in ("metrics.json", "referral.png", "ood_scores.png", "reliability_bayesian.png", "posterior.pt",
                 "vocabulary.json"):
        assert (run_dir / name).is_file(), name


def test_sentiment_rejects_bad_lines(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text("fine sentence\t1\nno label here\n")
    with pytest.raises(ValueError, match=r"bad.txt line 2: expected 'sentence<TAB>0\|1'"):
        sentiment.read_sentences(f)
