"""The fused mean-field draw + KL node against the same expression traced by autograd."""
import pytest
import torch
from torch.nn.functional import softplus

from pyrobnn.fastelbo import _kl_normal
from pyrobnn.fused import sample_with_kl


def _reference(loc, rho, eps, p_loc, p_scale):
    scale = softplus(rho)
    return loc + eps * scale, _kl_normal(loc, scale, p_loc, p_scale).sum()


@pytest.mark.parametrize("particles", [None, 3])
@pytest.mark.parametrize("tensor_prior", [False, True])
def test_values_and_gradients_equal_autograd(particles, tensor_prior):
    g = torch.Generator().manual_seed(0)
    n = 257
    loc0, rho0 = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64) * 3
    rho0[:3] = torch.tensor([25.0, -25.0, 0.0], dtype=torch.float64)  # both softplus branches and its middle
    eps = torch.randn(*(() if particles is None else (particles,)), n, generator=g, dtype=torch.float64)
    if tensor_prior:
        p_loc = torch.randn(n, generator=g, dtype=torch.float64)
        p_scale = torch.rand(n, generator=g, dtype=torch.float64) + 0.1
    else:
        p_loc, p_scale = 0.3, 0.7
    w_out, k_out = torch.randn(eps.shape, generator=g, dtype=torch.float64), 1.7
    results = []
    for fn in (_reference, sample_with_kl):
        loc, rho = loc0.clone().requires_grad_(), rho0.clone().requires_grad_()
        draws, kl = fn(loc, rho, eps, p_loc, p_scale)
        ((draws * w_out).sum() + k_out * kl).backward()
        results.append((draws.detach(), kl.detach(), loc.grad, rho.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert results[1][3].abs().sum() > 0 and results[1][2].abs().sum() > 0


def test_gradcheck_and_kl_only():
    loc = torch.randn(20, dtype=torch.float64, requires_grad=True)
    rho = torch.randn(20, dtype=torch.float64, requires_grad=True)
    eps = torch.randn(2, 20, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a, b: sample_with_kl(a, b, eps, 0.0, 1.0), (loc, rho))
    _, kl = sample_with_kl(loc, rho, eps, 0.0, 1.0)  # the draws unused: their gradient is None
    kl.backward()
    torch.testing.assert_close(loc.grad, loc.detach())  # dKL/dloc = loc / 1 for a N(0, 1) prior
