"""Flow matching (velocity, training, samplers), NTM.from_flow_matching, and fine-tuning it with
the mean alignment (``fit(aux=MeanAlignment(...))``) and held parameters."""

import copy
import math

import pytest
import torch
from _models import perturb, stop_at
from torch import nn
from torch.distributions import Normal

import ntmdist as nd
from ntmdist import flow_matching as fm
from ntmdist.alignment import MeanAlignment
from ntmdist.schedule import posterior_coefficients
from ntmdist.training import aux_factor, fit, fit_velocity


class GaussianVelocity(nn.Module):
    """Exact flow-matching velocity of data N(m, s^2) (per dimension):
    v(x, t) = -m + (t - (1-t) s^2) / ((1-t)^2 s^2 + t^2) (x - (1-t) m); the ODE maps noise z
    at t = 1 to m + s z at t = 0."""

    def __init__(self, m, s):
        super().__init__()
        self.register_buffer("m", m)
        self.register_buffer("s", s)
        self.event_shape, self.classes = torch.Size(m.shape), None

    def forward(self, x, t, y=None):
        t = t[:, None]
        var = (1 - t) ** 2 * self.s**2 + t**2
        return -self.m + (t - (1 - t) * self.s**2) / var * (x - (1 - t) * self.m)


M = torch.tensor([1.0, -2.0], dtype=torch.float64)
S = torch.tensor([0.5, 1.5], dtype=torch.float64)


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2)])
def test_samplers_converge_at_their_order(method, order):
    v = GaussianVelocity(M, S)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    exact = M + S * z
    solver = getattr(fm, method)
    errors = [(solver(v, z, n) - exact).abs().max().item() for n in (8, 16, 32, 64)]
    ratios = [a / b for a, b in zip(errors, errors[1:], strict=False)]
    assert all(0.8 * 2**order < r < 1.25 * 2**order for r in ratios), (errors, ratios)
    assert errors[-1] < (0.15 if order == 1 else 2e-3)


def test_heun_beats_euler_at_equal_steps():
    v = GaussianVelocity(M, S)
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    for n in (2, 4, 16):
        heun, euler = fm.heun(v, z, n), fm.euler(v, z, n)
        assert (heun - M - S * z).abs().max() < (euler - M - S * z).abs().max()


def test_loss_convention_target_is_eps_minus_x0():
    v = GaussianVelocity(M, S)
    x0 = M + S * torch.randn(4096, 2, generator=torch.Generator().manual_seed(2))

    def loss(module):
        return fm.velocity_loss(module, x0, generator=torch.Generator().manual_seed(3))

    class Flipped(nn.Module):
        def forward(self, x, t, y=None):
            return -v(x, t)

    # E||v* - (eps - x0)||^2 is the smallest; the minimiser with the opposite sign is far off
    assert loss(v) < 0.5 * loss(Flipped())


def test_fit_velocity_reduces_loss_and_samples():
    x0 = M + S * torch.randn(512, 2, generator=torch.Generator().manual_seed(4))
    torch.manual_seed(0)
    v = fm.Velocity(2, width=32, depth=1, embedding=16)
    result = fit_velocity(v, x0, steps=150, batch_size=128, lr=1e-2, progress=False)
    loss = result.history["loss"]
    assert sum(loss[-20:]) / 20 < 0.8 * sum(loss[:20]) / 20
    samples = fm.sample(result.apply_ema(), 2000, steps=16, method="heun",
                        generator=torch.Generator().manual_seed(5))
    assert samples.shape == (2000, 2)
    assert torch.allclose(samples.mean(0), M, atol=0.3)


def test_velocity_labels_and_errors():
    v = fm.Velocity(3, classes=4, width=16, depth=1, embedding=8)
    x, t = torch.randn(5, 3), torch.rand(5)
    perturb(v, 0.3, 0)
    assert torch.equal(v(x, t), v(x, t, torch.full((5,), 4)))  # None is the null label
    assert not torch.allclose(v(x, t), v(x, t, torch.zeros(5, dtype=torch.long)))
    assert v(x, torch.tensor(0.3)).shape == (5, 3)
    with pytest.raises(ValueError, match="0..3"):
        v(x, t, torch.full((5,), 5))
    with pytest.raises(ValueError, match="unconditional"):
        fm.Velocity(3, width=16, depth=1)(x, t, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"vectors \(D,\) and images \(C, H, W\)"):
        fm.Velocity((4, 4))
    loss = fm.velocity_loss(v, x, torch.zeros(5, dtype=torch.long),
                            torch.Generator().manual_seed(0), label_dropout=0.5)
    assert loss.shape == () and loss.requires_grad
    with pytest.raises(ValueError, match="method"):
        fm.sample(v, 3, steps=2, method="rk4")


class ConvBackbone(nn.Module):
    """A custom backbone for (C, H, W) events, called as backbone(x, c)."""

    def __init__(self, channels, context):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.film = nn.Linear(context, channels)

    def forward(self, x, c):
        return self.conv(x) + self.film(c)[:, :, None, None]


def test_custom_backbone_for_images():
    v = fm.Velocity((1, 4, 4), classes=2, embedding=8, backbone=ConvBackbone(1, 16))
    assert v(torch.randn(3, 1, 4, 4), torch.rand(3), torch.tensor([0, 1, 2])).shape == (3, 1, 4, 4)
    for method in ("euler", "heun", "ancestral"):
        assert fm.sample(v, 2, steps=3, method=method).shape == (2, 1, 4, 4)
    assert v.config()["backbone"] == "custom"


def random_velocity(classes=None, seed=0):
    torch.manual_seed(seed)
    v = fm.Velocity(3, classes=classes, width=16, depth=1, embedding=8)
    perturb(v, 0.5, seed)  # the zero-initialised output layer would give v = 0
    return v


def gaussian_step(v, x_t, s, t, y):
    """(mean, scale) of N(A x_t + B (x_t - t v), C^2), the flow-matching ancestral step."""
    n = x_t.shape[0]
    a, b, c = posterior_coefficients(torch.tensor(s), torch.tensor(t))
    x0 = x_t - t * v(x_t, torch.full((n,), t), y)
    return a * x_t + b * x0, c.expand(x_t.shape)


# the 1e-10 identity holds for every step whose C >= sigma_min (1e-2 by default): with
# t_min > 0 (not tiny) that is every step; the t_min = 0 case is checked separately below
@pytest.mark.parametrize("classes", [None, 3])
@pytest.mark.parametrize("schedule", [nd.Schedule(4, t_min=0.05), nd.Schedule(3, 0.02, shift=1.0)])
def test_from_flow_matching_steps_are_the_gaussian_posterior(schedule, classes):
    v = random_velocity(classes)
    model = nd.NTM.from_flow_matching(v, schedule)
    assert model.predictor.velocity is not v and not model.transporter.is_identity
    g = torch.Generator().manual_seed(1)
    y = None if classes is None else torch.tensor([0, 1, 2, 3, 1, 0])
    dist = model(y)
    grid = schedule.grid.tolist()
    for k in range(1, schedule.steps + 1):
        s, t = grid[k - 1], grid[k]
        x_t, x_s = torch.randn(6, 3, generator=g) * 2, torch.randn(6, 3, generator=g) * 2
        step = dist.steps[k - 1].condition(x_t)
        loc, scale = gaussian_step(v, x_t, s, t, y)
        base = step.base_dist.base_dist
        assert torch.allclose(base.loc, loc, atol=1e-10, rtol=0)
        assert torch.allclose(base.scale, scale, atol=1e-10, rtol=0)
        expected = Normal(loc, scale).log_prob(x_s).sum(-1)
        assert torch.allclose(step.log_prob(x_s), expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("t_min", [0.05, 0.0])
def test_from_flow_matching_is_the_ancestral_sampler(t_min):
    """The trajectory density equals that of the ancestral sampler of the velocity, on samples
    of that sampler and of the NTM. With t_min = 0 the last step has C = 0: its scale is the
    floor sigma_min exactly, and the identity holds with that scale."""
    schedule = nd.Schedule(4, t_min=t_min)
    v = random_velocity()
    model = nd.NTM.from_flow_matching(v, schedule)
    sigma_min = model.predictor.sigma_min
    g = torch.Generator().manual_seed(2)
    grid = schedule.grid.tolist()

    def ancestral_log_prob(traj):
        lp = Normal(0.0, 1.0).log_prob(traj[:, -1]).sum(-1)
        for k in range(1, schedule.steps + 1):
            loc, scale = gaussian_step(v, traj[:, k], grid[k - 1], grid[k], None)
            assert (scale > 0).all() or (k == 1 and t_min == 0)
            lp = lp + Normal(loc, scale.clamp_min(sigma_min)).log_prob(traj[:, k - 1]).sum(-1)
        return lp

    traj = model().sample((8,), generator=g)
    assert torch.allclose(model().log_prob(traj), ancestral_log_prob(traj), atol=1e-10, rtol=0)
    # the ancestral sampler's last level against the NTM's level 0, in distribution
    x = fm.ancestral(v, torch.randn(4000, 3, generator=g), schedule, generator=g)
    samples = model.sample(4000, generator=g)
    assert torch.allclose(x.mean(0), samples.mean(0), atol=0.15)
    assert torch.allclose(x.std(0), samples.std(0), rtol=0.1)


def test_from_flow_matching_config_round_trip():
    model = nd.NTM.from_flow_matching(random_velocity(classes=2), nd.Schedule(3, 0.05),
                                      predictor_options={"width": 8, "depth": 1})
    config = model.config()
    assert config["predictor"] == "flow_matching" and config["velocity"]["classes"] == 2
    rebuilt = nd.NTM.from_config(config)
    rebuilt.load_state_dict(model.state_dict())
    traj = model().sample((4,))
    assert torch.equal(rebuilt().log_prob(traj), model().log_prob(traj))
    custom = fm.Velocity((1, 2, 2), embedding=8, backbone=ConvBackbone(1, 8))
    image_model = nd.NTM.from_flow_matching(custom, transporter=None)
    assert image_model.config()["velocity"] == "custom"
    with pytest.raises(ValueError, match="velocity"):
        nd.NTM.from_config(image_model.config())
    with pytest.raises(ValueError, match="event_shape"):
        nd.NTM.from_flow_matching(nn.Identity())


def test_from_flow_matching_trains_a_frozen_velocity():
    """fit's ema_model is frozen; the NTM built on it must still fine-tune the velocity (the
    benchmarks' FM rows once trained only the head and transporter because of this)."""
    x = torch.randn(128, 3, generator=torch.Generator().manual_seed(5))
    trained = fit(random_velocity(), x, steps=2, batch_size=16, loss_fn=fm.velocity_loss,
                  progress=False).ema_model
    assert not any(p.requires_grad for p in trained.parameters())
    model = nd.NTM.from_flow_matching(trained, nd.Schedule(2, 0.05), transporter=None,
                                      predictor_options={"width": 8, "depth": 1})
    before = copy.deepcopy(model.predictor.velocity.state_dict())
    fit(model, x, steps=2, batch_size=16, progress=False)
    changed = [k for k, v in model.predictor.velocity.state_dict().items()
               if not torch.equal(v, before[k])]
    assert changed and not any(p.requires_grad for p in trained.parameters())
    with pytest.raises(ValueError, match="frozen"):
        fit(trained, x, steps=1, loss_fn=fm.velocity_loss, progress=False)


def test_hold_keeps_the_velocity_fixed_for_its_first_steps(tmp_path):
    x = torch.randn(128, 3, generator=torch.Generator().manual_seed(6))
    kwargs = dict(batch_size=16, progress=False, hold={"predictor.velocity": 2})

    def model():
        return nd.NTM.from_flow_matching(random_velocity(), nd.Schedule(2, 0.05),
                                         predictor_options={"width": 8, "depth": 1})

    def aligned(m):
        return dict(model=m, aux=MeanAlignment(m.predictor, weight=2.5))

    def state(m, prefix):
        return {k: v.clone() for k, v in m.state_dict().items() if k.startswith(prefix)}

    def changed(a, b):
        return [k for k in a if not torch.equal(a[k], b[k])]

    start = model()
    velocity, head = state(start, "predictor.velocity."), state(start, "predictor.head.")
    two = fit(**aligned(model()), data=x, steps=2, **kwargs)
    assert not changed(velocity, state(two.model, "predictor.velocity."))
    assert not changed(velocity, state(two.ema_model, "predictor.velocity."))
    assert changed(head, state(two.model, "predictor.head."))
    three = fit(**aligned(model()), data=x, steps=3, **kwargs)
    assert changed(velocity, state(three.model, "predictor.velocity."))

    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(**aligned(model()), data=x, steps=3, checkpoint=path, checkpoint_every=1,
            callback=stop_at(1), **kwargs)
    resumed = fit(**aligned(model()), data=x, steps=3, checkpoint=path, resume=True, **kwargs)
    assert resumed.history["loss"] == three.history["loss"]
    for bad, match in (({"predictor.velo": 1}, "no trainable parameter"),
                       ({"predictor.velocity": -1}, "steps >= 0")):
        with pytest.raises(ValueError, match=match):
            fit(model(), x, steps=1, batch_size=16, progress=False, hold=bad)


def test_aux_factor_is_a_cosine_from_one_to_zero():
    steps = 8
    values = [aux_factor(n, steps) for n in range(steps + 1)]
    expected = [0.5 * (1 + math.cos(math.pi * n / steps)) for n in range(steps + 1)]
    assert values == pytest.approx(expected, abs=1e-15)
    assert values[0] == 1.0 and values[-1] == 0.0 and values[steps // 2] == pytest.approx(0.5)
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def test_aux_weight_adds_the_decayed_alignment_term():
    """Step 1: the model is its frozen copy, the term and its gradient are exactly 0, so both
    runs stay equal; step 2's loss then differs by exactly weight * term."""
    x = M[:1].repeat(3) + torch.randn(256, 3, generator=torch.Generator().manual_seed(3))

    def run(aux_weight):
        logged = []
        model = nd.NTM.from_flow_matching(random_velocity(), nd.Schedule(3, 0.05),
                                          predictor_options={"width": 8, "depth": 1})
        aux = MeanAlignment(model.predictor, aux_weight) if aux_weight else None
        result = fit(model, x, steps=4, batch_size=32, lr=1e-2, progress=False, ema=None,
                     aux=aux, callback=lambda n, m: logged.append(m))
        return result, logged

    plain, _ = run(0.0)
    aligned, logged = run(2.5)
    aux = aligned.history["aux"]
    assert "aux" not in plain.history and len(aux) == 4
    assert aux[0] == 0.0 and all(a > 0 for a in aux[1:])
    weights = [m["aux_weight"] for m in logged]
    assert weights == pytest.approx([2.5 * aux_factor(n, 4) for n in range(4)], abs=1e-15)
    loss_a, loss_b = plain.history["loss"], aligned.history["loss"]
    assert loss_a[0] == loss_b[0]
    assert loss_b[1] == pytest.approx(loss_a[1] + weights[1] * aux[1], abs=1e-12)
    with pytest.raises(RuntimeError, match="never called the aligned module"):
        fit(nn.Linear(2, 2), x[:, :2], steps=1, loss_fn=lambda m, a, b: m(a).sum(),
            aux=MeanAlignment(nn.Linear(2, 2), 1.0))
    with pytest.raises(ValueError, match="weight"):
        MeanAlignment(nn.Linear(2, 2), -1.0)


def test_aux_weight_resume_is_exact(tmp_path):
    x = torch.randn(128, 3, generator=torch.Generator().manual_seed(4))
    kwargs = dict(steps=4, batch_size=16, seed=1, progress=False)

    def aligned(seed):
        options = {"width": 8, "depth": 1}
        model = nd.NTM.from_flow_matching(random_velocity(seed=seed), nd.Schedule(2, 0.05),
                                          transporter=None, predictor_options=options)
        return dict(model=model, aux=MeanAlignment(model.predictor, weight=2.5))

    straight = fit(**aligned(0), data=x, **kwargs)
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(**aligned(0), data=x, checkpoint=path, checkpoint_every=2, callback=stop_at(2),
            **kwargs)
    resumed = fit(**aligned(9), data=x, checkpoint=path, resume=True, **kwargs)
    assert resumed.history["loss"] == straight.history["loss"]
    assert resumed.history["aux"] == straight.history["aux"]
