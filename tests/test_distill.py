"""Trajectory Tweedie denoising (closed form) and the learned denoiser."""

import pytest
import torch
from _models import small_model
from torch import nn
from torch.distributions import MultivariateNormal

import ntmdist as nd
from ntmdist import distill
from ntmdist.schedule import trajectory_covariance
from ntmdist.training import checkpoint as ckpt
from ntmdist.training import fit_denoiser
from ntmdist.transporter import _AtTime

M = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
S = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64)


class GaussianReverse(nn.Module):
    """Exact reverse conditionals p(x_s | x_t) of the forward process of data N(m, s^2): with
    v_t = (1-t)^2 s^2 + t^2 and c = Cov(x_s, x_t) = (1-s)(1-t) s^2 + s^2_time (1-t)/(1-s),
    p(x_s | x_t) = N((1-s) m + c / v_t (x_t - (1-t) m), v_s - c^2 / v_t). With the identity
    transporter the NTM's trajectory density is then the exact one (a linear predictor)."""

    def __init__(self, m, s):
        super().__init__()
        self.m = nn.Parameter(m.clone())  # NTM takes its dtype and device from a parameter
        self.register_buffer("s", s)

    def forward(self, u, t, s, y=None):
        t, s = t[:, None], s[:, None]
        var = lambda r: (1 - r) ** 2 * self.s**2 + r**2  # noqa: E731
        cov = (1 - s) * (1 - t) * self.s**2 + s**2 * (1 - t) / (1 - s)
        mu = (1 - s) * self.m + cov / var(t) * (u - (1 - t) * self.m)
        return mu, 0.5 * torch.log(var(s) - cov**2 / var(t))


def gaussian_model(schedule):
    return nd.NTM((3,), schedule, transporter=None, predictor=GaussianReverse(M, S))


def trajectory_law(grid):
    """Per dimension d: the joint Gaussian of (x0, x_{t_0:t_T}) as (mean, cov) of the
    trajectory and Cov(x0, traj), for data N(M_d, S_d^2)."""
    one_minus = 1 - grid
    cov_given_x0 = trajectory_covariance(grid)
    var0 = S[:, None, None] ** 2
    cov = var0 * one_minus[:, None] * one_minus[None, :] + cov_given_x0  # (D, T+1, T+1)
    cross = var0[..., 0] * one_minus  # (D, T+1)
    mean = M[:, None] * one_minus  # (D, T+1)
    return mean, cov, cross


@pytest.mark.parametrize("schedule", [nd.Schedule(3, t_min=0.1), nd.Schedule(4, 0.05, shift=1.0)])
def test_denoise_is_the_exact_posterior_mean(schedule):
    model = gaussian_model(schedule)
    g = torch.Generator().manual_seed(0)
    x0 = M + S * torch.randn(7, 3, generator=g)
    traj = schedule.sample(x0, generator=g)  # (7, T+1, 3)
    mean, cov, cross = trajectory_law(schedule.grid)
    per_dim = traj.transpose(1, 2)  # (7, 3, T+1)
    # the model's density is the exact Gaussian law of the trajectory
    exact = MultivariateNormal(mean, cov).log_prob(per_dim).sum(-1)
    assert torch.allclose(model().log_prob(traj), exact, atol=1e-10, rtol=0)
    # E[x0 | traj] = m + Cov(x0, traj) Cov(traj)^-1 (traj - mean)
    solved = torch.linalg.solve(cov, (per_dim - mean)[..., None])[..., 0]
    posterior = M + (cross * solved).sum(-1)
    assert torch.allclose(model().denoise(traj), posterior, atol=1e-10, rtol=0)


def test_denoise_at_t_min_zero_returns_level_zero_and_broadcasts():
    schedule = nd.Schedule(3, t_min=0.0)
    model = gaussian_model(schedule)
    traj = schedule.sample(torch.randn(5, 3), generator=torch.Generator().manual_seed(1))
    assert torch.equal(model().denoise(traj), traj[:, 0])
    # a batched distribution and a single trajectory: one estimate per batch element
    model = gaussian_model(nd.Schedule(3, t_min=0.1))
    dist = model().expand((4,))
    one = nd.Schedule(3, t_min=0.1).sample(torch.randn(3), generator=torch.Generator())
    out = dist.denoise(one)
    assert out.shape == (4, 3)
    assert torch.allclose(out, model().denoise(one).expand(4, 3), atol=1e-12, rtol=0)


def test_denoiser_network():
    d = distill.Denoiser(3, classes=2, width=16, depth=1, embedding=8)
    u, t0 = torch.randn(4, 3), torch.full((4,), 0.2)
    assert torch.allclose(d(u, t0, torch.tensor([0, 1, 2, 1])), u / 0.8)  # zero-initialised
    assert d(u, 0.0).shape == (4, 3)
    with pytest.raises(ValueError, match="unconditional"):
        distill.Denoiser(3)(u, t0, torch.zeros(4, dtype=torch.long))
    assert distill.Denoiser(**d.config()).config() == d.config()


def test_fit_denoiser_reduces_loss_and_freezes_the_model():
    model = small_model(features=2, steps=2, t_min=(0.0, 0.05))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(512, 2, generator=torch.Generator().manual_seed(2)) * 0.5 + 1.0
    result = fit_denoiser(model, x, steps=60, batch_size=64, lr=1e-2, progress=False,
                          denoiser=distill.Denoiser(2, width=32, depth=1))
    loss = result.history["loss"]
    assert sum(loss[-10:]) / 10 < 0.7 * sum(loss[:10]) / 10
    assert model.denoiser is result.model
    assert all(p.requires_grad for n, p in model.named_parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the NTM is untouched
    assert {k for k in after if k.startswith("denoiser.")} and set(before) < set(after)


def test_learned_denoise_needs_no_inversion_and_no_backward(monkeypatch):
    model = small_model(features=2, steps=3, classes=3)
    with pytest.raises(ValueError, match="fit_denoiser"):
        model.sample(4, denoise="learned")
    model.denoiser = distill.Denoiser(2, classes=3, width=16, depth=1).double()
    calls = {"inverse": 0}

    def counting(method):
        def counted(self, y):
            calls["inverse"] += 1
            return method(self, y)
        return counted

    def no_backward(*args, **kwargs):
        raise AssertionError("autograd backward pass during sampling")

    for name in ("_backward", "_backward_only"):  # with and without the log-determinant
        monkeypatch.setattr(_AtTime, name, counting(getattr(_AtTime, name)))
    monkeypatch.setattr(torch.autograd, "grad", no_backward)
    monkeypatch.setattr(torch.autograd, "backward", no_backward)
    g = torch.Generator().manual_seed(0)
    out = model.sample(6, y=torch.tensor(1), denoise="learned", generator=g)
    assert out.shape == (6, 2) and not out.requires_grad and calls["inverse"] == 0
    assert model.sample(5, denoise="learned").shape == (5, 2)  # the null label
    model.sample(6, generator=g)
    assert calls["inverse"] == 1  # the default path inverts the transporter once
    with pytest.raises(AssertionError, match="backward"):
        model.sample(2, denoise="tweedie")


def test_denoiser_checkpoint_round_trip(tmp_path):
    model = nd.NTM((2,), nd.Schedule(2, 0.05), transporter_options={"hidden": (8,), "bins": 4},
                   predictor_options={"width": 16, "depth": 1})
    x = torch.randn(128, 2, generator=torch.Generator().manual_seed(3))
    fit_denoiser(model, x, steps=3, batch_size=16, progress=False)
    config = model.config()
    assert config["denoiser"] == model.denoiser.config()
    path = tmp_path / "ntm.pt"
    ckpt.save_checkpoint(path, {"model": model.state_dict(), "ema": None,
                                         "meta": ckpt.metadata(model)})
    state = ckpt.load_checkpoint(path)
    rebuilt = nd.NTM.from_config(state["meta"]["model"])
    ckpt.load_weights(rebuilt, path)
    g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    assert torch.equal(rebuilt.sample(3, denoise="learned", generator=g()),
                       model.sample(3, denoise="learned", generator=g()))
    del config["denoiser"]
    with pytest.raises(RuntimeError, match="denoiser"):
        nd.NTM.from_config(config).load_state_dict(model.state_dict())
