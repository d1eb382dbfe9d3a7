"""Vectorisable LSTM, GRU and RNN (and their cells): the gate equations written out.

``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` run a fused ATen kernel that has no ``vmap`` batching rule (nor does
``nn.LSTMCell``), so a lifted net that contains them could not be run on a batch of weight samples.
:func:`unfused_recurrence` replaces, for the duration of a block, the ``forward`` of every such module in a net
(``nn.LSTMCell``, ``nn.GRUCell`` and ``nn.RNNCell`` too) with the same recurrence written as plain matrix
products. It reads the module's own parameters under their
own names (``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0`` ...), so ``functional_call``
swaps in sampled weights exactly as for a Linear layer, and it returns what torch returns
(``output, h_n`` / ``output, (h_n, c_n)``) for multi-layer, bidirectional, batch-first or not,
batched or unbatched input, with or without projections. The test suite checks it against torch's
kernels to 1e-5.

The weights are read once per call, so one weight sample is held fixed across every step of the
sequence (Fortunato et al. 2017).
"""
from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import PackedSequence

from .patching import forwards

RECURRENT = (nn.LSTM, nn.GRU, nn.RNN)
CELLS = (nn.LSTMCell, nn.GRUCell, nn.RNNCell)


def _lstm_cell(gx, h, c, w_hh, b_hh, w_hr):
    gates = gx + F.linear(h, w_hh, b_hh)
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if w_hr is not None:
        h = F.linear(h, w_hr)
    return h, c


def _gru_cell(gx, h, w_hh, b_hh):
    gh = F.linear(h, w_hh, b_hh)
    xr, xz, xn = gx.chunk(3, dim=-1)
    hr, hz, hn = gh.chunk(3, dim=-1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h


def _rnn_cell(gx, h, w_hh, b_hh, nonlinearity):
    pre = gx + F.linear(h, w_hh, b_hh)
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def _run_direction(m, x, layer, suffix, h, c, reverse, mask=None):
    """One layer, one direction over time-major ``x`` [T, B, F]; returns outputs [T, B, H] and the
    final state. Where ``mask`` [T, B, 1] is False (past a packed sequence's end) the state is held: the
    forward direction ends on each row's last real step, the reverse one starts there."""
    def get(name: str) -> torch.Tensor | None:  # absent for bias=False / no projection
        return getattr(m, f"{name}_l{layer}{suffix}", None)

    w_ih, w_hh, b_ih, b_hh = getattr(m, f"weight_ih_l{layer}{suffix}"), getattr(m, f"weight_hh_l{layer}{suffix}"), \
        get("bias_ih"), get("bias_hh")
    gx = F.linear(x, w_ih, b_ih)  # the input projection of every step at once
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    outs: list[torch.Tensor] = [x] * x.shape[0]  # placeholders, each overwritten below
    w_hr = get("weight_hr")
    for t in steps:
        if isinstance(m, nn.LSTM):
            h_t, c_t = _lstm_cell(gx[t], h, c, w_hh, b_hh, w_hr)
            c = c_t if mask is None else torch.where(mask[t], c_t, c)
        elif isinstance(m, nn.GRU):
            h_t = _gru_cell(gx[t], h, w_hh, b_hh)
        else:
            h_t = _rnn_cell(gx[t], h, w_hh, b_hh, m.nonlinearity)
        h = outs[t] = h_t if mask is None else torch.where(mask[t], h_t, h)
    return torch.stack(outs), h, c


def _pack(padded: torch.Tensor, lengths: torch.Tensor, batch_first: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """What torch's packing kernel returns, ``(data, batch_sizes)``, for rows sorted by decreasing length."""
    steps = padded.transpose(0, 1) if batch_first else padded
    sizes = (lengths.cpu()[None, :] > torch.arange(int(lengths.max()))[:, None]).sum(1)
    return _packed_data(steps, sizes), sizes


def _packed_data(steps: torch.Tensor, batch_sizes: torch.Tensor) -> torch.Tensor:
    """Time-major steps [T, B, ...] as a pack's data: the first ``batch_sizes[t]`` rows of each step."""
    return torch.cat([steps[t, :n] for t, n in enumerate(batch_sizes.tolist())])


def _pad(data: torch.Tensor, batch_sizes: torch.Tensor, batch_first: bool, padding_value: float,
         total_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What torch's unpacking kernel returns, ``(padded, lengths)``, in the pack's sorted order."""
    sizes = batch_sizes.tolist()
    steps = [F.pad(step, (0, 0, 0, sizes[0] - len(step)), value=padding_value) for step in data.split(sizes)]
    steps += [torch.full_like(steps[0], padding_value)] * (total_length - len(steps))
    padded = torch.stack(steps)
    lengths = (batch_sizes[None, :] > torch.arange(sizes[0])[:, None]).sum(1)
    return padded.transpose(0, 1) if batch_first else padded, lengths


@contextmanager
def plain_packing():
    """Within the block ``pack_padded_sequence`` and ``pad_packed_sequence`` (however imported) run on plain tensor
    ops, which vmap batches over weight draws; torch's kernels have no vmap rule (their batch sizes would come out
    batched)."""
    vf = torch.nn.utils.rnn._VF
    setattr(vf, "_pack_padded_sequence", _pack)
    setattr(vf, "_pad_packed_sequence", _pad)
    try:
        yield
    finally:
        del vf._pack_padded_sequence, vf._pad_packed_sequence


def _unpacked(x: PackedSequence) -> tuple[torch.Tensor, torch.Tensor]:
    """A packed batch as time-major steps [T, B, F] (rows in the pack's sorted order, zeros past each end) and the
    [T, B, 1] mask of real steps."""
    steps, _ = _pad(x.data, x.batch_sizes, False, 0.0, len(x.batch_sizes))
    mask = torch.arange(steps.shape[1], device=x.data.device) < x.batch_sizes.to(x.data.device)[:, None]
    return steps, mask.unsqueeze(-1)


def _repacked(out: torch.Tensor, like: PackedSequence) -> PackedSequence:
    """Time-major outputs [T, B, H] packed as ``like`` is."""
    return PackedSequence(_packed_data(out, like.batch_sizes), like.batch_sizes, like.sorted_indices,
                          like.unsorted_indices)


def _reorder(state, order: torch.Tensor | None):
    """``h`` (or ``(h, c)``) with its batch axis (dim 1) in ``order``, as torch permutes a packed batch's state."""
    if state is None or order is None:
        return state
    if isinstance(state, tuple):
        return tuple(s.index_select(1, order) for s in state)
    return state.index_select(1, order)


def cell_forward(m: nn.LSTMCell | nn.GRUCell | nn.RNNCell, x: torch.Tensor, hx=None):
    """What the cell ``m(x, hx)`` returns (``(h, c)`` for an LSTMCell, ``h`` otherwise), from plain tensor ops."""
    unbatched = x.dim() == 1
    if unbatched:
        x = x.unsqueeze(0)
        hx = None if hx is None else tuple(s.unsqueeze(0) for s in hx) if isinstance(hx, tuple) else hx.unsqueeze(0)
    zeros = x.new_zeros(x.shape[0], m.hidden_size)
    gx = F.linear(x, m.weight_ih, m.bias_ih)
    if isinstance(m, nn.LSTMCell):
        h, c = (zeros, zeros) if hx is None else hx
        out: torch.Tensor | tuple[torch.Tensor, torch.Tensor] = _lstm_cell(gx, h, c, m.weight_hh, m.bias_hh, None)
    elif isinstance(m, nn.GRUCell):
        out = _gru_cell(gx, zeros if hx is None else hx, m.weight_hh, m.bias_hh)
    else:
        out = _rnn_cell(gx, zeros if hx is None else hx, m.weight_hh, m.bias_hh, m.nonlinearity)
    if unbatched:
        return tuple(s.squeeze(0) for s in out) if isinstance(out, tuple) else out.squeeze(0)
    return out


def recurrent_forward(m: nn.LSTM | nn.GRU | nn.RNN, x: torch.Tensor, hx=None):
    """What ``m(x, hx)`` returns (``output, h_n`` for a GRU, ``output, (h_n, c_n)`` for an LSTM),
    computed from ``m``'s parameters with plain tensor ops; a ``PackedSequence`` in gives one out, each row's
    state ending (or, reversed, starting) on its own last step."""
    packed, mask = (x, None) if isinstance(x, PackedSequence) else (None, None)
    if packed is not None:
        x, mask = _unpacked(packed)
        hx = _reorder(hx, packed.sorted_indices)
    is_lstm = isinstance(m, nn.LSTM)
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(1)
    elif m.batch_first and packed is None:
        x = x.transpose(0, 1)
    dirs = 2 if m.bidirectional else 1
    n_states, batch = m.num_layers * dirs, x.shape[1]
    out_size = m.proj_size if is_lstm and m.proj_size > 0 else m.hidden_size
    if hx is None:
        h0 = x.new_zeros(n_states, batch, out_size)
        c0 = x.new_zeros(n_states, batch, m.hidden_size) if is_lstm else None
    else:
        h0, c0 = hx if is_lstm else (hx, None)
        if unbatched:
            h0, c0 = h0.unsqueeze(1), (c0.unsqueeze(1) if c0 is not None else None)
    hs: list[torch.Tensor] = []
    cs: list[torch.Tensor] = []
    layer_in = x
    for layer in range(m.num_layers):
        outs = []
        for d in range(dirs):
            k = layer * dirs + d
            out, h, c = _run_direction(m, layer_in, layer, "_reverse" if d else "", h0[k],
                                       c0[k] if c0 is not None else None, reverse=bool(d), mask=mask)
            outs.append(out)
            hs.append(h)
            cs.append(c)
        layer_in = torch.cat(outs, dim=-1) if dirs == 2 else outs[0]
        if m.dropout and m.training and layer < m.num_layers - 1:
            layer_in = F.dropout(layer_in, m.dropout, training=True)
    h_n = torch.stack(hs)
    out = layer_in
    if packed is not None:
        out = _repacked(out, packed)
        state = _reorder((h_n, torch.stack(cs)) if is_lstm else h_n, packed.unsorted_indices)
        return out, state
    if unbatched:
        out, h_n = out.squeeze(1), h_n.squeeze(1)
    elif m.batch_first:
        out = out.transpose(0, 1)
    if not is_lstm:
        return out, h_n
    c_n = torch.stack(cs)
    return out, (h_n, c_n.squeeze(1) if unbatched else c_n)


def unfused_recurrence(net: nn.Module) -> AbstractContextManager:
    """A block within which every ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` inside ``net`` runs :func:`recurrent_forward`,
    every cell :func:`cell_forward`."""
    return forwards([(m, lambda x, hx=None, _m=m, _run=recurrent_forward if isinstance(m, RECURRENT) else cell_forward:
                      _run(_m, x, hx)) for m in net.modules() if isinstance(m, RECURRENT + CELLS)])


class CarriedState:
    """Truncated BPTT state carry: inside ``with CarriedState(net) as carry:``, every LSTM/GRU of
    ``net`` called without an explicit state starts from the (detached) final state of its previous
    call, so consecutive chunks of one batch of sequences continue each other while gradients stop
    at chunk boundaries. ``carry.reset()`` starts fresh sequences (zero state). Works on the net's
    own forward (one weight sample); a state cannot be carried across vectorised weight samples."""

    def __init__(self, net: nn.Module):
        self.modules = [m for m in net.modules() if isinstance(m, RECURRENT)]
        if not self.modules:
            raise ValueError("truncated BPTT needs a net with an nn.LSTM, nn.GRU or nn.RNN")
        self.state: dict[int, object] = {}

    def reset(self) -> None:
        """Forget the carried state: the next call starts from zeros."""
        self.state.clear()

    def _forward(self, m, original):
        def forward(x, hx=None):
            if hx is None:
                hx = self.state.get(id(m))
            out, new = original(x, hx)
            self.state[id(m)] = tuple(s.detach() for s in new) if isinstance(new, tuple) else new.detach()
            return out, new
        return forward

    def __enter__(self):
        for m in self.modules:
            setattr(m, "forward", self._forward(m, m.forward))
        return self

    def __exit__(self, *exc):
        for m in self.modules:
            del m.forward
        self.reset()
