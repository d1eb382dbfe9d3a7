"""Bad input gets a one-line ValueError that names the input and the problem."""
from __future__ import annotations

import math

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import pyrobnn
from pyrobnn import MeanFieldNormal, likelihoods, predict, priors
from pyrobnn.data import check_features, read_csv, read_idx
from pyrobnn.experiments.egg_data import load_egg_csv
from pyrobnn.models.egg import Standardize
from tests.test_contract import RawTable


def bnn():
    return pyrobnn.lift(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3)),
                        likelihood=pyrobnn.likelihoods.Categorical(3))


X = torch.randn(10, 2)
Y = torch.randint(0, 3, (10,))
nan_x = X.clone()
nan_x[7, 1] = math.nan
inf_x = X.clone()
inf_x[3, 0] = math.inf


def fit(x, y, net=None, **kw):
    b = bnn() if net is None else pyrobnn.lift(net)
    pyrobnn.fit(b, MeanFieldNormal(b), (x, y), epochs=kw.pop("epochs", 1), progress=False, **kw)


def _fit_regression(y):
    b = pyrobnn.lift(nn.Linear(2, 1), likelihood="normal")
    pyrobnn.fit(b, MeanFieldNormal(b), (torch.randn(4, 2), y), epochs=1, progress=False)


CASES = [
    ("NaN feature", lambda: fit(nan_x, Y), "X contains NaN or inf (first at row 7)"),
    ("inf feature", lambda: fit(inf_x, Y), "X contains NaN or inf (first at row 3)"),
    ("wrong feature count", lambda: fit(torch.randn(10, 3), Y), "X has 3 features; the net expects 2"),
    ("1-D features", lambda: fit(torch.randn(10), Y), "X must be 2-D"),
    ("empty data", lambda: fit(torch.empty(0, 2), torch.empty(0, dtype=torch.long)), "X is empty"),
    ("label out of range", lambda: fit(X, torch.tensor([0, 1, 2, 3, 0, 1, 2, 0, 1, 2])),
     "labels must be integers in [0, 3); got 3 at row 3"),
    ("negative label", lambda: fit(X, -torch.ones(10, dtype=torch.long)), "got -1 at row 0"),
    ("non-integer label", lambda: fit(X, torch.full((10,), 1.5)),
     "labels must be integers in [0, 3); got 1.5 at row 0"),
    ("label count", lambda: fit(X, Y[:7]), "labels has 7 rows but the features have 10"),
    ("2-D labels", lambda: fit(X, torch.zeros(10, 2)), "labels must be 1-D"),
    ("batch larger than data", lambda: fit(X, Y, batch_size=11), "batch_size 11 is larger than the data (10 rows)"),
    ("zero batch", lambda: fit(X, Y, batch_size=0), "batch_size must be >= 1"),
    ("zero epochs", lambda: fit(X, Y, epochs=0), "epochs must be >= 1"),
    ("negative lr", lambda: fit(X, Y, lr=-1.0), "lr must be a finite number > 0"),
    ("unknown loss", lambda: fit(X, Y, loss="kl"), "unknown loss 'kl'"),
    ("unknown optimiser", lambda: fit(X, Y, optimizer="sgd"), "unknown optimizer 'sgd'"),
    ("zero particles", lambda: fit(X, Y, num_particles=0), "num_particles must be >= 1"),
    ("cuda without gpu", lambda: fit(X, Y, device="cuda") if not torch.cuda.is_available() else
     (_ for _ in ()).throw(ValueError("no CUDA GPU is available (skipped: GPU present)")), "no CUDA GPU is available"),
    ("num_samples zero", lambda: predict(bnn(), MeanFieldNormal(bnn()), X, num_samples=0),
     "num_samples must be a positive integer; got 0"),
    ("num_samples negative", lambda: predict(bnn(), MeanFieldNormal(bnn()), X, num_samples=-5), "got -5"),
    ("predict NaN", lambda: predict(bnn(), MeanFieldNormal(bnn()), nan_x, num_samples=5), "X contains NaN"),
    ("predict wrong width", lambda: predict(bnn(), MeanFieldNormal(bnn()), torch.randn(4, 5), num_samples=5),
     "X has 5 features"),
    ("prior scale zero", lambda: priors.Normal(0, 0), "prior scale must be a finite number > 0; got 0"),
    ("prior scale negative", lambda: pyrobnn.lift(nn.Linear(2, 2), prior={"name": "laplace", "scale": -1}),
     "prior scale must be a finite number > 0; got -1"),
    ("mixture pi", lambda: priors.ScaleMixture(pi=1.5), "prior pi must lie in (0, 1)"),
    ("unknown prior", lambda: pyrobnn.lift(nn.Linear(2, 2), prior="cauchy"), "unknown prior 'cauchy'"),
    ("unknown likelihood", lambda: pyrobnn.lift(nn.Linear(2, 2), likelihood="cauchy"), "unknown likelihood 'cauchy'"),
    ("unknown guide", lambda: pyrobnn.make_guide("laplace", bnn()), "unknown guide 'laplace'"),
    ("guide init scale", lambda: MeanFieldNormal(bnn(), init_scale=0.0), "init_scale must be > 0"),
    ("likelihood classes", lambda: pyrobnn.likelihoods.Categorical(1), "num_classes must be >= 2"),
    ("nothing Bayesian", lambda: pyrobnn.lift(nn.Linear(2, 2), priors={"": None}), "nothing to make Bayesian"),
    ("a Dataset, not a DataLoader",
     lambda: _fit_data(torch.utils.data.Subset(torch.utils.data.TensorDataset(X, Y), [0])),
     "data must be an (X, y) pair of tensors or a torch DataLoader, e.g. DataLoader(dataset, batch_size=128, "
     "shuffle=True)"),
    ("NaN target", lambda: _fit_regression(torch.tensor([1.0, math.nan, 0.5, 2.0])),
     "targets contains NaN or inf (first at row 1)"),
    ("2-D targets", lambda: _fit_regression(torch.zeros(4, 2)), "targets must be 1-D [rows] (or [rows, 1])"),
    ("likelihood scale", lambda: pyrobnn.likelihoods.Normal(scale=-2.0), "likelihood scale must be > 0"),
    ("features text", lambda: check_features([["a", "b"]]), "X must be numeric"),
    ("Bernoulli label 2", lambda: _fit_with(likelihoods.Bernoulli(), torch.tensor([0, 1, 2, 0])),
     "labels must be integers in {0, 1}; got 2 at row 2"),
    ("Bernoulli on 3 logits", lambda: _fit_with(likelihoods.Bernoulli(), torch.tensor([0, 1, 1, 0]), width=3),
     "Bernoulli needs one logit per row (net output [N] or [N, 1]); the net outputs 3"),
    ("Categorical on 1 logit", lambda: _fit_with(likelihoods.Categorical(), torch.zeros(4, dtype=torch.long)),
     "Categorical needs one logit per class (>= 2); the net outputs 1 (for binary labels use likelihoods.Bernoulli)"),
    ("label beyond the net's classes",
     lambda: _fit_with(likelihoods.Categorical(), torch.tensor([0, 1, 7, 0]), width=4),
     "labels must be integers in [0, 4); got 7 at row 2"),
    ("negative count", lambda: _fit_with(likelihoods.Poisson(), torch.tensor([1.0, -1.0, 0.0, 2.0])),
     "counts must be non-negative integers; got -1 at row 1"),
    ("fractional count", lambda: _fit_with(likelihoods.Poisson(), torch.tensor([1.0, 0.5, 0.0, 2.0])),
     "counts must be non-negative integers; got 0.5 at row 1"),
    ("custom returns a float", lambda: _fit_with(likelihoods.Custom(lambda out: 3.0, name="bad"), torch.zeros(4)),
     "custom likelihood 'bad' must return a pyro.distributions distribution; got builtins.float"),
    ("custom returns a torch distribution",
     lambda: _fit_with(likelihoods.Custom(lambda out: torch.distributions.Normal(out[..., 0], 1.0), name="t"),
                       torch.zeros(4)), "got torch.distributions.normal.Normal"),
    ("custom batch shape", lambda: _fit_with(likelihoods.Custom(lambda out: dist.Normal(out, 1.0), name="rows"),
                                             torch.zeros(4)), "batch shape (4, 1) must end in the 4 rows"),
    ("targets for k outputs", lambda: _fit_with(likelihoods.Normal(), torch.zeros(4), width=2),
     "targets must be [rows, 2] for a net with 2 outputs; got shape (4,)"),
    ("k targets, other width", lambda: _fit_with(likelihoods.Normal(targets=3), torch.zeros(4, 3)),
     "the likelihood has 3 targets but the net outputs 1 values per row"),
    ("StudentT df", lambda: likelihoods.StudentT(df=0), "StudentT df must be a finite number > 0; got 0"),
    ("net returns a tuple", lambda: fit(X, Y, net=TupleOut()), "the net must return a tensor; it returned tuple"),
    ("predict mode", lambda: predict(bnn(), MeanFieldNormal(bnn()), X, num_samples=5, mode="mc"),
     "mode must be 'eval' (running statistics, no dropout) or 'train' (MC dropout); got 'mc'"),
    ("one-hot labels", lambda: fit(X, torch.nn.functional.one_hot(Y, 3)),
     "labels must be 1-D [rows]; got shape (10, 3) (one-hot rows? pass y.argmax(1))"),
    ("string labels", lambda: fit(X, np.array(list("abcabcabca"))),
     "labels must be integers in [0, 3); got <U1 values such as 'a': map them to class ids first"),
    ("a DataLoader of dicts", lambda: _fit_loader([{"x": X[i], "y": Y[i]} for i in range(10)]),
     "the DataLoader must yield (X, y) pairs; it yielded a dict with keys ['x', 'y']"),
    ("a DataLoader of triples", lambda: _fit_loader(torch.utils.data.TensorDataset(X, Y, Y)),
     "the DataLoader must yield (X, y) pairs; it yielded 3 tensors"),
    ("no guide", lambda: pyrobnn.fit(bnn(), None, (X, Y), epochs=1, progress=False),
     "guide must be a Pyro guide for this net, e.g. pyrobnn.MeanFieldNormal(bnn)"),
    ("a guide of another net", lambda: pyrobnn.fit(bnn(), MeanFieldNormal(pyrobnn.lift(nn.Linear(2, 3))), (X, Y),
                                                    epochs=1, progress=False),
     "the guide was built for another net (sites differ: "),
    ("predict one row as 1-D", lambda: predict(bnn(), MeanFieldNormal(bnn()), X[0], num_samples=2),
     "X must be 2-D [rows, features]; got 1-D shape (2,) (reshape(1, -1) for one row)"),
    ("a lazy module", lambda: pyrobnn.lift(nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.Linear(4, 3))),
     "lift: '0.weight' is a lazy module's parameter, not yet initialised, so its prior has no shape; run the net "
     "once on a batch (net(x[:2])) before lift"),
    ("a DataParallel wrapper", lambda: pyrobnn.lift(nn.DataParallel(nn.Linear(2, 3))),
     "lift: DataParallel replicates the net's own weights on every device, so it cannot run sampled ones; lift "
     "net.module"),
    ("a final softmax", lambda: fit(X, Y, net=nn.Sequential(nn.Linear(2, 3), nn.Softmax(-1))),
     "the net ends in a softmax, so it returns probabilities, but Categorical reads logits (the softmax would be "
     "applied twice); drop the final softmax (the likelihood applies it) or end in log_softmax"),
    ("custom event shape", lambda: _fit_with(likelihoods.Custom(lambda out: dist.Normal(out[..., :2], 1.0).to_event(1),
                                                                name="pair"), torch.zeros(4, 3), width=3),
     "custom likelihood 'pair': each target row has shape (3,) but the distribution is over (2,) per row"),
    ("ids outside a raw table", lambda: fit(torch.randint(12, 20, (10, 5)), Y.clamp(max=1), net=RawTable()),
     "X has 5 features; the net expects 8 (on X's integers as they are the net raised IndexError: index out of range"),
    ("a net cast after its guide", lambda: _cast_after_guide(),
     "the weight draws are torch.float32 but the net is torch.float64 (cast after its guide was built?)"),
    ("a final sigmoid", lambda: pyrobnn.lift(nn.Sequential(nn.Linear(2, 1), nn.Sigmoid()), likelihood="bernoulli")
     .check_inputs(X, Y.clamp(max=1)), "the net ends in a sigmoid, so it returns probabilities, but Bernoulli reads "
     "logits"),
]


def _cast_after_guide():
    b = bnn()
    guide = MeanFieldNormal(b)
    b.net.double()
    pyrobnn.fit(b, guide, (X, Y), epochs=1, progress=False)


def _fit_data(data):
    b = bnn()
    pyrobnn.fit(b, MeanFieldNormal(b), data, epochs=1, progress=False)


def _fit_loader(dataset):
    b = bnn()
    pyrobnn.fit(b, MeanFieldNormal(b), torch.utils.data.DataLoader(dataset, batch_size=5), epochs=1, progress=False)


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(2, 3)

    def forward(self, x):
        return self.a(x), x


def _fit_with(likelihood, y, width=1):
    b = pyrobnn.lift(nn.Linear(2, width), likelihood=likelihood)
    pyrobnn.fit(b, MeanFieldNormal(b), (torch.randn(len(y), 2), y), epochs=1, progress=False)


@pytest.mark.parametrize("name,call,message", CASES, ids=[c[0] for c in CASES])
def test_bad_api_input(name, call, message):
    with pytest.raises((ValueError, TypeError)) as e:
        call()
    text = str(e.value)
    assert message in text
    assert "\n" not in text


def test_nan_output_at_autonormals_zero_start_is_named():
    """weight_norm divides by |v|: at Pyro's AutoNormal start (every weight 0) the net returns 0/0. The first line
    says so (Pyro appends the trace's shapes below it); pyrobnn's own auto_normal starts from the net and trains."""
    from pyro.infer.autoguide import AutoNormal
    b = pyrobnn.lift(nn.Sequential(nn.utils.parametrizations.weight_norm(nn.Linear(2, 4)), nn.Linear(4, 3)))
    with pytest.raises(ValueError) as e:
        AutoNormal(b.model)(X, Y)
    assert str(e.value).splitlines()[0].startswith("the net returned NaN/inf at these weights")
    hist = pyrobnn.fit(b, pyrobnn.auto_normal(b), (X, Y), epochs=20, lr=0.05, progress=False)
    assert hist.records[-1]["loss"] < hist.records[0]["loss"]


def _csv(tmp_path, content: bytes | str, name="eggs.csv"):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return p


CSV_CASES = [
    ("missing column", ",weight,outcome\n0,55.0,2\n", "missing column(s) ['time']"),
    ("semicolons", ";weight;time;outcome\n0;55.0;7.1;2\n", "looks like another delimiter"),
    ("non-numeric", ",weight,time,outcome\n0,55.0,7.1,2\n1,heavy,2.8,0\n",
     "column 'weight' has a non-numeric value 'heavy' at data row 1"),
    ("empty cell", ",weight,time,outcome\n0,55.0,,2\n", "column 'time' has an empty cell at data row 0"),
    ("no rows", ",weight,time,outcome\n", "no data rows"),
    ("empty file", "", "the file is empty"),
    ("not utf-8", b",weight,time,outcome\n0,55.0,7.1,2\n1,\xff\xfe,2.8,0\n", "not UTF-8"),
    ("label 3", ",weight,time,outcome\n0,55.0,7.1,3\n", "outcome must be integers in [0, 3); got 3 at row 0"),
    ("label float", ",weight,time,outcome\n0,55.0,7.1,1.5\n", "got 1.5 at row 0"),
    ("negative weight", ",weight,time,outcome\n0,-55.0,7.1,1\n", "weight must be > 0 g"),
]


@pytest.mark.parametrize("name,content,message", CSV_CASES, ids=[c[0] for c in CSV_CASES])
def test_bad_egg_csv(tmp_path, name, content, message):
    with pytest.raises(ValueError) as e:
        load_egg_csv(_csv(tmp_path, content))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="data file not found: .*nope.csv"):
        read_csv(tmp_path / "nope.csv", ["a"])


def _idx(tmp_path, raw: bytes, gz=False):
    import gzip

    p = tmp_path / ("x.idx.gz" if gz else "x.idx")
    p.write_bytes(gzip.compress(raw) if gz else raw)
    return p


IDX_OK = bytes([0, 0, 8, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(6))
IDX_CASES = [
    ("wrong magic", b"\x00\x00\x07\x02" + IDX_OK[4:], False, "not an IDX file (wrong magic number 00000702"),
    ("png header", b"\x89PNG\r\n\x1a\n", False, "not an IDX file"),
    ("truncated data", IDX_OK[:-2], False, "truncated: dimensions [2, 3] need 18 bytes, the file has 16"),
    ("truncated header", IDX_OK[:6], True, "truncated IDX header"),
    ("trailing bytes", IDX_OK + b"\x00", True, "has trailing bytes"),
]


@pytest.mark.parametrize("name,raw,gz,message", IDX_CASES, ids=[c[0] for c in IDX_CASES])
def test_bad_idx_file(tmp_path, name, raw, gz, message):
    with pytest.raises(ValueError) as e:
        read_idx(_idx(tmp_path, raw, gz))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_idx_reader_round_trip(tmp_path):
    for gz in (False, True):
        t = read_idx(_idx(tmp_path, IDX_OK, gz))
        assert t.dtype == torch.uint8 and t.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_zero_variance_column_in_standardisation():
    with pytest.raises(ValueError, match="feature column 1 has zero variance"):
        Standardize(2).fit(torch.tensor([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]))


@pytest.mark.parametrize("args,message", [
    (["--epochs", "0"], "epochs must be >= 1; got 0"),
    (["--num-samples", "-1"], "num_samples must be >= 1; got -1"),
    (["--batch-size", "0"], "batch_size must be >= 1; got 0"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "tpu9"], "device"),
    (["--resume", "/nonexistent/run"], "not a run directory (no config.json): /nonexistent/run"),
])
def test_cli_bad_options_exit_2_with_one_line(tmp_path, capsys, args, message):
    from pyrobnn.experiments.cli import main

    assert main(["run", "egg", "--out", str(tmp_path), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("pyrobnn: error:") and message in err and "\n" not in err


def test_constant_columns_can_be_allowed_explicitly():
    s = Standardize(2).fit(torch.tensor([[1.0, 5.0], [3.0, 5.0]]), allow_constant=True)
    assert s.std.tolist() == [pytest.approx(2**0.5), 1.0]
    assert s(torch.tensor([[2.0, 5.0]])).tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("spectral_norm", [nn.utils.spectral_norm, nn.utils.parametrizations.spectral_norm])
def test_spectral_norm_is_refused_in_one_line_naming_the_module(spectral_norm):
    """Its power iteration updates one estimate in place: under vmap that failed deep inside torch
    ("Batching rule not implemented for aten::div.out")."""
    net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), spectral_norm(nn.Linear(4, 3)))
    with pytest.raises(pyrobnn.errors.Unsupported) as e:
        pyrobnn.lift(net)
    assert str(e.value).startswith("lift: module '2' uses spectral_norm") and "\n" not in str(e.value)


def test_a_torchscript_net_is_refused_in_one_line():
    net = torch.jit.script(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 3)))
    with pytest.raises(pyrobnn.errors.Unsupported, match=r"^lift: the net is a TorchScript module"):
        pyrobnn.lift(net)
