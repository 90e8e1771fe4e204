"""Training on the importance-weighted bound (``NTM(train_particles=K)``): the loss is
:math:`-\\mathrm{IWAE}_K(x_{t_0}) / D` of level 0 with K forward chains per example, checked
against the bound computed trajectory by trajectory in float64 with the same draws."""

import math

import pytest
import torch
from _models import small_model

import ntmdist as nd
from ntmdist.training import fit


def particles_model(particles: int, classes: int | None = None,
                    train_steps: tuple[int, ...] | None = None) -> nd.NTM:
    """``small_model``'s perturbed networks (with a per-step bijector), ``t_min`` drawn per
    example, trained with ``particles`` trajectories per example."""
    base = small_model(features=2, steps=2, step_flow=True, classes=classes, seed=4)
    return nd.NTM((2,), nd.Schedule(2, t_min=(0.0, 0.1)), transporter=base.transporter,
                  predictor=base.predictor, step_flow=base.step_flow, classes=classes,
                  train_steps=train_steps, train_particles=particles)


@pytest.mark.parametrize(("particles", "classes", "train_steps"), [
    (3, None, None), (2, 3, None), (4, None, (2, 3)),
])
def test_loss_is_the_bound_of_level_0_one_trajectory_at_a_time(particles, classes, train_steps):
    model = particles_model(particles, classes, train_steps).eval()  # eval: no label dropout
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    y = None if classes is None else torch.tensor([0, 1, 2, 0, 1])
    loss = model.loss(x, y, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the same draws, in the order the loss makes them
    s = model.train_schedules[0]
    if train_steps is not None:
        s = model.train_schedules[int(torch.randint(len(train_steps), (), generator=g))]
    grid = s.draw_grid((5,), x, g)
    assert grid[:, 0].unique().numel() == 5  # t_0 drawn per example
    level0 = s.sample(x, 1, g, grid=grid)[:, 0]
    traj = s.sample(level0.expand(particles, 5, 2), 1, g, grid=grid, from_level0=True)
    lw = torch.tensor([[
        model(None if y is None else y[b], grid=grid[b]).log_prob(traj[k, b]).item()
        - s.log_prob_forward(traj[k, b], 1, grid[b]).item() for b in range(5)
    ] for k in range(particles)])
    expected = -(torch.logsumexp(lw, 0) - math.log(particles)).mean() / 2
    assert torch.allclose(loss, expected, rtol=1e-12, atol=1e-12)


def test_one_particle_is_the_trajectory_nll():
    model = particles_model(1)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(2))
    loss = model.loss(x, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    grid = model.schedule.draw_grid((6,), x, g)
    traj = model.schedule.sample(x, 1, g, grid=grid)
    assert torch.allclose(loss, -model(grid=grid).log_prob(traj).mean() / 2, rtol=0, atol=1e-12)


def test_training_on_the_bound_lowers_it():
    """A few steps on the bound of a perturbed model lower the bound on held-out draws."""
    model = particles_model(4)
    data = torch.randn(256, 2, generator=torch.Generator().manual_seed(6)) * 0.5 + 1.0

    def held_out(m: nd.NTM) -> float:
        with torch.no_grad():
            return m.loss(data, generator=torch.Generator().manual_seed(7)).item()

    before = held_out(model)
    result = fit(model, data, steps=40, batch_size=64, lr=3e-3, ema=None, seed=0,
                 progress=False)
    assert held_out(result.model) < before - 0.05


def test_config_round_trip_keeps_train_particles():
    model = nd.NTM((2,), train_particles=4)
    assert model.config()["train_particles"] == 4 and model.train_particles == 4
    assert nd.NTM.from_config(model.config()).train_particles == 4
    old = nd.NTM((2,)).config()
    del old["train_particles"]  # a config written before train_particles existed
    assert nd.NTM.from_config(old).train_particles == 1
    fm = nd.NTM.from_flow_matching(nd.flow_matching.Velocity(2, width=16, depth=1),
                                   nd.Schedule(4, 0.05), train_particles=2)
    assert nd.NTM.from_config(fm.config()).train_particles == 2


@pytest.mark.parametrize(("particles", "error"), [
    (0, ValueError), (-2, ValueError), (2.0, TypeError), (True, TypeError), ("4", TypeError),
])
def test_bad_train_particles_are_refused(particles, error):
    with pytest.raises(error, match="train_particles"):
        nd.NTM((2,), train_particles=particles)
