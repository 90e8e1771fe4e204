import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from ntmdist import data
from ntmdist.metrics import (
    bits_per_dim,
    energy_distance,
    fraction_on_support,
    frechet_distance,
    nats_per_dim,
)


def _naive_energy(x, y, unbiased):
    x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
    dxy = (x[:, None] - y[None]).norm(dim=-1).mean()
    dxx = (x[:, None] - x[None]).norm(dim=-1).sum()
    dyy = (y[:, None] - y[None]).norm(dim=-1).sum()
    n, m = len(x), len(y)
    if unbiased:
        return float(2 * dxy - dxx / (n * (n - 1)) - dyy / (m * (m - 1)))
    return float(2 * dxy - dxx / n**2 - dyy / m**2)


def _energy_1d_gaussians(delta):
    """Closed form for N(0, 1) against N(delta, 1): E|Z| for Z ~ N(mu, s^2) is
    s sqrt(2/pi) exp(-mu^2 / 2 s^2) + mu (1 - 2 Phi(-mu / s))."""

    def mean_abs(mu, s):
        return s * math.sqrt(2 / math.pi) * math.exp(-(mu**2) / (2 * s**2)) + mu * (
            1 - 2 * norm.cdf(-mu / s)
        )

    s = math.sqrt(2)
    return 2 * mean_abs(delta, s) - 2 * mean_abs(0.0, s)


@pytest.mark.parametrize("unbiased", [True, False])
@pytest.mark.parametrize("chunk", [None, 1, 7, 1000])
def test_energy_chunked_equals_naive(unbiased, chunk):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 3, generator=g), torch.randn(200, 3, generator=g) + 0.3
    expected = _naive_energy(x, y, unbiased)
    assert math.isclose(energy_distance(x, y, unbiased, chunk), expected, rel_tol=1e-9)


def test_energy_event_shapes_and_numpy():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 2, 3, generator=g), torch.randn(30, 2, 3, generator=g)
    expected = _naive_energy(x, y, True)
    assert math.isclose(energy_distance(x, y), expected, rel_tol=1e-9)
    assert math.isclose(energy_distance(x.numpy(), y.float().numpy()), expected, rel_tol=1e-6)


def test_energy_unbiased_under_the_null():
    g = torch.Generator().manual_seed(0)
    u_stats, v_stats = [], []
    for _ in range(300):
        x, y = torch.randn(20, 2, generator=g), torch.randn(20, 2, generator=g)
        u_stats.append(energy_distance(x, y))
        v_stats.append(energy_distance(x, y, unbiased=False))
    u, v = np.array(u_stats), np.array(v_stats)
    assert abs(u.mean()) < 4 * u.std() / math.sqrt(len(u))  # zero in expectation
    assert (v >= 0).all() and v.mean() > 10 * v.std() / math.sqrt(len(v))  # biased upwards
    # two large samples of one law: close to zero
    x, y = torch.randn(3000, 2, generator=g), torch.randn(3000, 2, generator=g)
    assert abs(energy_distance(x, y)) < 5e-3


@pytest.mark.parametrize("delta", [0.5, 1.0, 2.0])
def test_energy_shifted_gaussians_closed_form(delta):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4000, 1, generator=g), torch.randn(4000, 1, generator=g) + delta
    expected = _energy_1d_gaussians(delta)
    assert expected > 0
    assert abs(energy_distance(x, y) - expected) < 0.05 * expected + 5e-3
    assert energy_distance(x, y) == pytest.approx(energy_distance(y, x), rel=1e-12)


def test_energy_bad_inputs():
    with pytest.raises(ValueError, match="event size"):
        energy_distance(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="n >= 2"):
        energy_distance(torch.zeros(1, 2), torch.zeros(5, 2))
    assert energy_distance(torch.zeros(1, 2), torch.ones(1, 2), unbiased=False) == pytest.approx(
        2 * math.sqrt(2)
    )
    with pytest.raises(ValueError, match="chunk"):
        energy_distance(torch.zeros(5, 2), torch.zeros(5, 2), chunk=0)


def test_fraction_on_support():
    x = data.checkerboard(1000, generator=torch.Generator().manual_seed(0))
    assert fraction_on_support(x, "checkerboard") == 1.0
    assert fraction_on_support(x + torch.tensor([2.0, 0.0]), "checkerboard") == 0.0
    half = torch.cat([x[:500], x[500:] + torch.tensor([2.0, 0.0])])
    assert fraction_on_support(half, data.checkerboard_support) == 0.5
    assert fraction_on_support(x, lambda z: z[:, 0] > 0) == pytest.approx(
        float((x[:, 0] > 0).double().mean())
    )
    with pytest.raises(ValueError, match="no bounded support"):
        fraction_on_support(x, "rings")
    with pytest.raises(ValueError, match="known"):
        fraction_on_support(x, "nope")
    with pytest.raises(TypeError):
        fraction_on_support(x, 3)


def test_nats_and_bits_per_dim():
    assert nats_per_dim(128.0, 64) == 2.0
    assert nats_per_dim(192.0, (3, 8, 8)) == 1.0
    per_dim = nats_per_dim(torch.tensor([64.0, 128.0]), [1, 8, 8])
    assert torch.equal(per_dim, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError):
        nats_per_dim(1.0, 0)
    # plain: nats / ln 2
    assert bits_per_dim(math.log(2)) == pytest.approx(1.0)
    # 8-bit data scaled to [0, 1): nll_y = nll_x + log 256
    assert bits_per_dim(1.0, -math.log(256)) == pytest.approx(1 / math.log(2) + 8)
    # by hand: 2.5 nats per dim on x = 2 q/17 - 1: (2.5 - log(2/17)) / ln 2
    assert bits_per_dim(2.5, math.log(2 / 17)) == pytest.approx((2.5 + math.log(8.5)) / 0.693147)
    t = bits_per_dim(torch.tensor([0.0, math.log(2)]), 0.0)
    assert torch.allclose(t, torch.tensor([0.0, 1.0]))


def _with_moments(z, mean, cov):
    """Affine map of z whose sample mean and unbiased covariance are exactly mean and cov."""
    z = z - z.mean(0)
    white = z @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(z, rowvar=False)))).T
    return mean + white @ np.linalg.cholesky(cov).T


def test_frechet_closed_form_2d():
    rng = np.random.default_rng(0)
    mean_a, mean_b = np.array([0.5, -1.0]), np.array([2.0, 1.0])
    cov_a = np.array([[2.0, 0.6], [0.6, 1.0]])
    cov_b = np.array([[0.5, -0.3], [-0.3, 1.5]])
    a = _with_moments(rng.standard_normal((500, 2)), mean_a, cov_a)
    b = _with_moments(rng.standard_normal((300, 2)), mean_b, cov_b)
    # for 2x2 PSD M: tr sqrt(M) = sqrt(tr M + 2 sqrt(det M)), M = A^1/2 B A^1/2
    cross = math.sqrt(np.trace(cov_a @ cov_b) + 2 * math.sqrt(np.linalg.det(cov_a @ cov_b)))
    expected = ((mean_a - mean_b) ** 2).sum() + np.trace(cov_a + cov_b) - 2 * cross
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(torch.tensor(b), torch.tensor(a)) == pytest.approx(expected, rel=1e-9)
    assert abs(frechet_distance(a, a)) < 1e-9


def test_frechet_diagonal_and_1d():
    rng = np.random.default_rng(1)
    va, vb = rng.uniform(0.5, 2.0, 5), rng.uniform(0.5, 2.0, 5)
    a = _with_moments(rng.standard_normal((200, 5)), np.zeros(5), np.diag(va))
    b = _with_moments(rng.standard_normal((200, 5)), np.ones(5), np.diag(vb))
    expected = 5.0 + ((np.sqrt(va) - np.sqrt(vb)) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    x = _with_moments(rng.standard_normal((100, 1)), np.zeros(1), np.eye(1) * 4.0)[:, 0]
    y = _with_moments(rng.standard_normal((100, 1)), np.ones(1), np.eye(1))[:, 0]
    assert frechet_distance(x, y) == pytest.approx(1.0 + (2.0 - 1.0) ** 2, rel=1e-9)
    with pytest.raises(ValueError, match="same size"):
        frechet_distance(a, b[:, :3])
