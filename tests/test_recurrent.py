"""The written-out LSTM/GRU/RNN (and cells) equal torch's kernels, and nets that contain them lift with no change."""
import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO
from torch import nn
from torch.func import functional_call

import pyrobnn
from pyrobnn.conformance import check
from pyrobnn.models.zoo import CellLoopRNN
from pyrobnn.recurrent import cell_forward, recurrent_forward

CONFIGS = [
    (nn.LSTM, {}),
    (nn.LSTM, {"num_layers": 2, "batch_first": True}),
    (nn.LSTM, {"num_layers": 2, "bidirectional": True}),
    (nn.LSTM, {"bias": False, "bidirectional": True, "batch_first": True}),
    (nn.LSTM, {"proj_size": 3, "num_layers": 2, "batch_first": True}),
    (nn.GRU, {}),
    (nn.GRU, {"num_layers": 3, "batch_first": True}),
    (nn.GRU, {"num_layers": 2, "bidirectional": True, "batch_first": True}),
    (nn.RNN, {}),
    (nn.RNN, {"nonlinearity": "relu", "num_layers": 2, "bidirectional": True, "batch_first": True}),
]


def _flat(result):
    out, state = result
    return [out, *(state if isinstance(state, tuple) else (state,))]


@pytest.mark.parametrize("cls,kw", CONFIGS)
@pytest.mark.parametrize("unbatched", [False, True])
def test_written_out_recurrence_matches_torch(cls, kw, unbatched):
    torch.manual_seed(1)
    m = cls(4, 6, **kw)
    batch_first = kw.get("batch_first", False)
    x = torch.randn(7, 4) if unbatched else torch.randn(*((5, 7) if batch_first else (7, 5)), 4)
    dirs, layers = 2 if kw.get("bidirectional") else 1, kw.get("num_layers", 1)
    h_size = kw.get("proj_size", 6)
    h0 = torch.randn(dirs * layers, *(() if unbatched else (5,)), h_size)
    c0 = torch.randn(dirs * layers, *(() if unbatched else (5,)), 6)
    hx = (h0, c0) if cls is nn.LSTM else h0
    for state in (None, hx):
        for ref, got in zip(_flat(m(x, state)), _flat(recurrent_forward(m, x, state))):
            assert ref.shape == got.shape
            torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls,kw", [(nn.LSTMCell, {}), (nn.GRUCell, {}), (nn.RNNCell, {}),
                                    (nn.RNNCell, {"nonlinearity": "relu", "bias": False})])
@pytest.mark.parametrize("unbatched", [False, True])
def test_written_out_cells_match_torch(cls, kw, unbatched):
    torch.manual_seed(5)
    m = cls(4, 6, **kw)
    x = torch.randn(*(() if unbatched else (5,)), 4)
    h, c = torch.randn(*(() if unbatched else (5,)), 6), torch.randn(*(() if unbatched else (5,)), 6)
    for state in (None, (h, c) if cls is nn.LSTMCell else h):
        ref, got = m(x, state), cell_forward(m, x, state)
        for r, g in zip(ref if isinstance(ref, tuple) else (ref,), got if isinstance(got, tuple) else (got,)):
            assert r.shape == g.shape
            torch.testing.assert_close(g, r, atol=1e-5, rtol=0)


def test_a_cell_loop_and_an_elman_rnn_run_on_batched_weight_samples_and_train_vectorised():
    torch.manual_seed(6)
    net = CellLoopRNN()  # a hand-written loop over an LSTMCell (no vmap rule in torch), then an Elman RNN
    bnn = pyrobnn.lift(net)
    x, y = torch.randn(12, 5, 3), torch.randint(0, 3, (12,))
    w = {k: p.detach() + 0.1 * torch.randn(3, *p.shape) for k, p in net.named_parameters()}
    out = bnn.forward(x, w)
    for i in range(3):  # each draw equals torch's own kernels with that draw's weights
        torch.testing.assert_close(out[i], functional_call(net, {k: v[i] for k, v in w.items()}, (x,)), atol=1e-5,
                                   rtol=0)
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.05)
    start = guide.loc_flat.detach().clone()
    hist = pyrobnn.fit(bnn, guide, (x, y), epochs=30, lr=0.02, num_particles=4, progress=False)
    assert hist.records[-1]["loss"] < hist.records[0]["loss"] and not torch.equal(start, guide.loc_flat)
    assert pyrobnn.predict(bnn, guide, x, num_samples=8, strategy="vectorize").draws.shape == (8, 12)


def test_gradients_match_torch():
    torch.manual_seed(2)
    m = nn.LSTM(3, 5, num_layers=2, batch_first=True)
    x = torch.randn(4, 6, 3)
    m(x)[0].pow(2).sum().backward()
    ref = {k: p.grad.clone() for k, p in m.named_parameters()}
    m.zero_grad()
    recurrent_forward(m, x)[0].pow(2).sum().backward()
    for k, p in m.named_parameters():
        torch.testing.assert_close(p.grad, ref[k], atol=1e-5, rtol=0)


class TextNet(nn.Module):
    """Embedding -> bidirectional GRU -> LSTM -> Linear, the user's net, untouched by lifting."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 5, padding_idx=0)
        self.gru = nn.GRU(5, 4, batch_first=True, bidirectional=True)
        self.lstm = nn.LSTM(8, 6, num_layers=2)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        h, _ = self.gru(self.emb(x))
        h, _ = self.lstm(h.transpose(0, 1))
        return self.out(h[-1])


def test_lifted_recurrent_net_runs_on_batched_weight_samples():
    torch.manual_seed(3)
    net = TextNet()
    bnn = pyrobnn.lift(net)
    assert bnn.vocab_size == 30 and {"gru.weight_hh_l0_reverse", "lstm.bias_ih_l1", "emb.weight"} <= set(bnn.site_names)
    x = torch.randint(0, 30, (5, 9))
    w = {k: p.detach() + 0.1 * torch.randn(4, 2, *p.shape) for k, p in net.named_parameters()}
    out = bnn.forward(x, w)
    assert out.shape == (4, 2, 5, 3)
    for i, j in [(0, 0), (3, 1)]:
        ref = functional_call(net, {k: v[i, j] for k, v in w.items()}, (x,))  # torch's fused kernels
        torch.testing.assert_close(out[i, j], ref, atol=1e-5, rtol=0)


def test_recurrent_net_vectorised_particles_and_predictive():
    torch.manual_seed(4)
    bnn = pyrobnn.lift(TextNet())
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=0.05)
    x, y = torch.randint(1, 30, (16, 7)), torch.randint(0, 3, (16,))
    loss = TraceMeanField_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    value = loss.differentiable_loss(bnn.model, guide, x, y)
    assert torch.isfinite(value)
    value.backward()
    assert guide.rho_flat.grad.abs().sum() > 0
    pp = pyrobnn.predict(bnn, guide, x[:3], num_samples=50, seed=0)
    freqs = pp.class_frequencies()
    assert freqs.shape == (3, 3)
    torch.testing.assert_close(freqs.sum(-1), torch.ones(3))


def test_token_inputs_are_checked():
    bnn = pyrobnn.lift(TextNet())
    with pytest.raises(ValueError, match=r"integer token ids"):
        bnn.check_inputs(torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"outside \[0, 30\) \(first at row 1, value 30\)"):
        bnn.check_inputs(torch.tensor([[1, 2], [3, 30]]))


PACKED = [(nn.LSTM, {"batch_first": True}), (nn.LSTM, {"proj_size": 3, "num_layers": 2, "bidirectional": True}),
          (nn.GRU, {"num_layers": 2, "bidirectional": True, "batch_first": True}), (nn.RNN, {})]


@pytest.mark.parametrize("cls,kw", PACKED)
@pytest.mark.parametrize("enforce_sorted", [False, True])
def test_packed_sequences_match_torch(cls, kw, enforce_sorted):
    """Each row's state ends (reversed: starts) on its own last step, as in torch's kernel; the output stays packed."""
    torch.manual_seed(0)
    m = cls(4, 5, **kw)
    lengths = torch.tensor([6, 4, 3, 1]) if enforce_sorted else torch.tensor([3, 6, 1, 4])
    x = torch.randn(4, 6, 4) if m.batch_first else torch.randn(6, 4, 4)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=m.batch_first, enforce_sorted=enforce_sorted)
    states = m.num_layers * (2 if m.bidirectional else 1)
    h0 = torch.randn(states, 4, kw.get("proj_size", 5))
    for hx in (None, (h0, torch.randn(states, 4, 5)) if cls is nn.LSTM else h0):
        out, state = recurrent_forward(m, packed, hx)
        ref_out, ref_state = m(packed, hx)
        assert torch.equal(out.batch_sizes, ref_out.batch_sizes)
        torch.testing.assert_close(_flat((out.data, state)), _flat((ref_out.data, ref_state)), atol=1e-5, rtol=0)


class PackedText(nn.Module):
    """Variable-length token rows (0 pads) through pack_padded_sequence, a GRU, and pad_packed_sequence."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 6, padding_idx=0)
        self.gru = nn.GRU(6, 5, batch_first=True, bidirectional=True)
        self.out = nn.Linear(10 + 10, 2)

    def forward(self, x):
        lengths = (x != 0).sum(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.emb(x), lengths, batch_first=True, enforce_sorted=False)
        seq, h = self.gru(packed)
        padded, _ = nn.utils.rnn.pad_packed_sequence(seq, batch_first=True, total_length=x.shape[1])
        return self.out(torch.cat([h.transpose(0, 1).flatten(1), padded.sum(1) / lengths[:, None]], 1))


def test_a_net_packing_its_sequences_runs_on_batched_weight_samples_and_trains_on_every_route():
    torch.manual_seed(1)
    net = PackedText()
    bnn = pyrobnn.lift(net)
    lengths = torch.randint(1, 8, (24,))
    x = torch.randint(1, 20, (24, 7)) * (torch.arange(7) < lengths[:, None])
    w = {k: p.detach() + 0.1 * torch.randn(3, *p.shape) for k, p in net.named_parameters()}
    out = bnn.forward(x, w)
    for d in range(3):  # torch's own packing and fused kernel, one draw at a time
        torch.testing.assert_close(out[d], functional_call(net, {k: v[d] for k, v in w.items()}, (x,)),
                                   atol=1e-5, rtol=0)
    y = (x[:, 0] > 10).long()
    for route in ("fit", "fit-particles", "svi"):
        pyro.clear_param_store()
        cell = check(pyrobnn.lift(PackedText()), pyrobnn.MeanFieldNormal, route, x, y)
        assert cell.status == "pass", (route, cell.detail)
    packed = nn.utils.rnn.pack_padded_sequence(torch.randn(4, 2, 2), [4, 2])
    assert nn.utils.rnn.pad_packed_sequence(packed)[0].shape == (4, 2, 2)  # torch's kernels are back after the call


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU])
def test_carried_state_continues_the_sequence_across_chunks(cls):
    from pyrobnn.recurrent import CarriedState

    torch.manual_seed(5)
    m = cls(3, 4, num_layers=2, batch_first=True)
    x = torch.randn(2, 9, 3)
    full = m(x)[0]
    with CarriedState(m) as carry:
        parts = [m(x[:, a:a + 4])[0] for a in range(0, 9, 4)]
        torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-6, rtol=0)
        carry.reset()
        torch.testing.assert_close(m(x[:, :4])[0], full[:, :4])
        assert all(not s.requires_grad for st in carry.state.values()
                   for s in (st if isinstance(st, tuple) else (st,)))
    assert "forward" not in m.__dict__


class StepClassifier(nn.Module):
    """Per-step logits as rows: [B, T, 1] -> [B * T, 2]."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(1, 12, batch_first=True)
        self.out = nn.Linear(12, 2)

    def forward(self, x):
        return self.out(self.gru(x)[0]).reshape(-1, 2)


class SpyELBO(TraceMeanField_ELBO):
    def __init__(self):
        super().__init__(max_plate_nesting=1)
        self.calls = []

    def differentiable_loss(self, model, guide, x, y, data_size=None):
        self.calls.append((tuple(x.shape), tuple(y.shape), data_size))
        return super().differentiable_loss(model, guide, x, y, data_size=data_size)


def _delay_task(n, t, seed):
    g = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (n, t), generator=g)
    y = torch.cat([torch.zeros(n, 2, dtype=torch.long), bits[:, :-2]], 1)  # y_t = x_{t-2}
    return bits.float().unsqueeze(-1), y


def test_tbptt_chunks_in_order_with_fortunato_weighting():
    x, y = _delay_task(8, 10, 0)
    bnn = pyrobnn.lift(StepClassifier())
    guide = pyrobnn.MeanFieldNormal(bnn)
    spy = SpyELBO()
    pyrobnn.fit(bnn, guide, (x, y), epochs=1, batch_size=4, tbptt=4, loss=spy, progress=False, seed=0)
    calls = spy.calls[1:]  # the first call only discovers the parameters
    # 2 minibatches x 3 chunks (4 + 4 + 2 steps); the likelihood scaled to N*T = 80 steps
    assert calls == [((4, 4, 1), (16,), 80), ((4, 4, 1), (16,), 80), ((4, 2, 1), (8,), 80)] * 2
    with pytest.raises(ValueError, match=r"tbptt needs X \[sequences, steps, \.\.\.\] and y \[sequences, steps\]"):
        pyrobnn.fit(bnn, guide, (x, y[:, :5]), epochs=1, tbptt=4, progress=False)
    with pytest.raises(ValueError, match="tbptt needs num_particles=1"):
        pyrobnn.fit(bnn, guide, (x, y), epochs=1, tbptt=4, num_particles=2, progress=False)


def test_tbptt_carries_memory_across_chunk_boundaries():
    """y_t = x_{t-2} with chunks of 3 steps: the first two targets of every chunk depend on the
    previous chunk, so they are learnable only if the state is carried."""
    x, y = _delay_task(256, 12, 1)
    x_te, y_te = _delay_task(256, 12, 2)
    torch.manual_seed(0)
    bnn = pyrobnn.lift(StepClassifier(), prior=pyrobnn.priors.Normal(0, 1))
    guide = pyrobnn.MeanFieldNormal(bnn, init_scale=1e-3)
    pyrobnn.fit(bnn, guide, (x, y), epochs=60, lr=0.02, batch_size=32, tbptt=3, progress=False, seed=0)
    pred = pyrobnn.predict(bnn, guide, x_te, num_samples=20, seed=0).mean_probs().argmax(-1).reshape(256, 12)
    boundary = torch.tensor([3, 4, 6, 7, 9, 10])  # first two steps of chunks 2..4
    acc = (pred[:, boundary] == y_te[:, boundary]).float().mean()
    assert acc > 0.9, f"accuracy across chunk boundaries {acc:.3f}"
