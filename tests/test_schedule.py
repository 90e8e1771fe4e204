import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import ntmdist as nd
from ntmdist.schedule import kernel_coefficients, posterior_coefficients


def test_uniform_and_shifted_grid():
    assert torch.allclose(nd.Schedule(4).grid, torch.tensor([0, 0.25, 0.5, 0.75, 1.0]).double())
    m = 1.0
    sched = nd.Schedule(4, t_min=0.01, shift=m)
    k = torch.arange(1, 5).double()
    expected = math.exp(m) / (math.exp(m) + 4 / k - 1)
    assert torch.allclose(sched.grid[1:], expected)
    assert sched.grid[0] == 0.01 and sched.grid[-1] == 1.0


@pytest.mark.parametrize("bad", [dict(steps=0), dict(steps=2.5), dict(t_min=-0.1),
                                 dict(t_min=0.3), dict(t_min=(0.2, 0.1)), dict(t_min=(0, 1, 2)),
                                 dict(shift=float("nan"))])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        nd.Schedule(**{"steps": 4, **bad})


@given(st.floats(0.0, 0.9), st.floats(0.01, 0.99))
def test_kernel_keeps_marginals(s, frac):
    s = torch.tensor(s).double()
    t = s + frac * (1 - s)
    alpha, sigma = kernel_coefficients(s, t)
    # Var[x_t | x0] = alpha^2 s^2 + sigma^2 = t^2 and mean (1 - t) x0 = alpha (1 - s) x0
    assert torch.allclose(alpha**2 * s**2 + sigma**2, t**2)
    assert torch.allclose(alpha * (1 - s), 1 - t)


@given(st.floats(0.0, 0.9), st.floats(0.01, 0.98))
def test_posterior_matches_gaussian_conditioning(s, frac):
    s = torch.tensor(s).double()
    t = s + frac * (1 - s)
    a, b, c = posterior_coefficients(s, t)
    alpha, sigma = kernel_coefficients(s, t)
    # (x_s, x_t) | x0 jointly Gaussian: Cov = s^2 alpha, Var x_t = t^2.
    gain = s**2 * alpha / t**2
    assert torch.allclose(a, gain)
    assert torch.allclose(b, (1 - s) - gain * (1 - t))
    assert torch.allclose(c**2, s**2 - gain * s**2 * alpha, atol=1e-12)


def test_covariance_matches_monte_carlo():
    sched = nd.Schedule(3, t_min=0.05)
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(200_000, 1)
    traj = sched.sample(x0, generator=g)[..., 0]
    emp = traj.T.cov()
    S = sched.covariance()
    # standard error of a Gaussian sample covariance: sqrt((S_ii S_jj + S_ij^2) / n)
    se = ((S.diagonal()[:, None] * S.diagonal()[None, :] + S**2) / traj.shape[0]).sqrt()
    assert torch.all((emp - S).abs() < 5 * se)
    assert torch.allclose(S.diagonal(), sched.grid**2)
    assert torch.all(S[-1, :-1] == 0)


def test_sample_marginals_and_shapes():
    sched = nd.Schedule(4, t_min=0.02)
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((100_000, 3), 2.0)
    traj = sched.sample(x0, generator=g)
    assert traj.shape == (100_000, 5, 3)
    mean = traj.mean((0, 2))
    std = traj.std(dim=0).mean(-1)
    assert torch.allclose(mean, 2 * (1 - sched.grid), atol=0.02)
    assert torch.allclose(std, sched.grid, atol=0.01)
    image = sched.sample(torch.zeros(2, 1, 4, 4), event_dim=3)
    assert image.shape == (2, 5, 1, 4, 4)
    again = sched.sample(x0[:5], generator=torch.Generator().manual_seed(7))
    assert torch.equal(again, sched.sample(x0[:5], generator=torch.Generator().manual_seed(7)))


def test_t_min_range_draws_per_example():
    sched = nd.Schedule(4, t_min=(0.0, 0.05))
    grid = sched.draw_grid((1000,), torch.zeros(1).double(), torch.Generator().manual_seed(0))
    assert grid.shape == (1000, 5)
    assert grid[:, 0].min() >= 0 and grid[:, 0].max() <= 0.05 and grid[:, 0].std() > 0.01
    assert torch.all(grid[:, 1:] == sched.grid[1:])
    assert sched.grid[0] == 0.0


def test_log_prob_forward_matches_kernels():
    sched = nd.Schedule(3, t_min=0.1)
    traj = sched.sample(torch.randn(4, 2), generator=torch.Generator().manual_seed(0))
    expected = torch.zeros(4)
    for k in range(1, 4):
        alpha, sigma = sched.kernel(k)
        normal = torch.distributions.Normal(alpha * traj[:, k - 1], sigma)
        expected += normal.log_prob(traj[:, k]).sum(-1)
    assert torch.allclose(sched.log_prob_forward(traj, 1), expected)


def test_config_roundtrip():
    sched = nd.Schedule(8, t_min=(0.0, 0.05), shift=0.5)
    assert nd.Schedule(**sched.config()) == sched
    assert nd.Schedule(8) != sched


def test_with_steps_keeps_t_min_and_shift():
    sched = nd.Schedule(4, t_min=(0.0, 0.05), shift=1.0)
    assert sched.with_steps(4) is sched
    assert sched.with_steps(8) == nd.Schedule(8, t_min=(0.0, 0.05), shift=1.0)
    with pytest.raises(ValueError, match="steps"):
        sched.with_steps(0)
