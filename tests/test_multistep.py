"""Multi-T models (``NTM(train_steps=...)``): one model trained on several numbers of steps, as
the paper trains one model for T in {4, 8, 16}, samples and bounds the likelihood with any."""

import copy

import pytest
import torch
from _models import small_model

import ntmdist as nd


def multi(train_steps: tuple[int, ...] = (2, 3), step_flow: bool = True) -> nd.NTM:
    """``small_model``'s networks (float64, perturbed) trained on ``train_steps``."""
    base = small_model(features=2, steps=2, step_flow=step_flow, seed=3)
    return nd.NTM((2,), base.schedule, transporter=base.transporter, predictor=base.predictor,
                  step_flow=base.step_flow, train_steps=train_steps)


@pytest.mark.parametrize("seed", range(6))
def test_loss_is_the_trajectory_nll_of_the_drawn_number_of_steps(seed):
    """Each call draws T uniformly from ``train_steps`` with the loss's generator and is then
    exactly the single-T loss on ``schedule.with_steps(T)`` with the rest of that generator."""
    model = multi()
    x0 = torch.randn(7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    loss = model.loss(x0, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)
    T = (2, 3)[int(torch.randint(2, (), generator=g))]
    single = copy.copy(model)
    single.train_schedules = [model.schedule.with_steps(T)]
    single.schedule = single.train_schedules[0]
    assert torch.allclose(loss, single.loss(x0, generator=g), rtol=0, atol=1e-12)


@pytest.mark.parametrize(("train_steps", "expected"), [((2, 3), {3, 4}), ((3,), {4})])
def test_the_numbers_of_steps_of_train_steps_are_trained(train_steps, expected):
    model = multi(train_steps)  # its schedule has 2 steps
    levels = []
    forward = model.forward

    def spy(*args, **kwargs):
        dist = forward(*args, **kwargs)
        levels.append(dist.event_shape[0])
        return dist

    model.forward = spy
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        model.loss(torch.randn(4, 2, dtype=torch.float64), generator=g)
    assert set(levels) == expected and (len(expected) == 1 or 5 <= levels.count(3) <= 15)


def test_bounds_and_samples_use_the_given_schedule():
    model = multi(step_flow=False)
    three = model.schedule.with_steps(3)
    other = copy.copy(model)
    other.schedule = three
    x = torch.randn(5, 2, dtype=torch.float64)
    a = model.iwae(x, particles=8, generator=torch.Generator().manual_seed(1), schedule=three)
    b = other.iwae(x, particles=8, generator=torch.Generator().manual_seed(1))
    c = model.iwae(x, particles=8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a, b, rtol=0, atol=1e-12) and not torch.allclose(a, c)
    e = model.elbo(x, generator=torch.Generator().manual_seed(2), schedule=three)
    assert torch.allclose(e, other.elbo(x, generator=torch.Generator().manual_seed(2)))
    s = model.sample(4, generator=torch.Generator().manual_seed(3), schedule=three)
    assert torch.equal(s, other.sample(4, generator=torch.Generator().manual_seed(3)))


def test_config_round_trip_keeps_train_steps():
    model = nd.NTM((2,), nd.Schedule(4, t_min=(0.0, 0.05), shift=1.0), train_steps=(4, 8, 16))
    assert model.config()["train_steps"] == [4, 8, 16]
    rebuilt = nd.NTM.from_config(model.config())
    assert [s.steps for s in rebuilt.train_schedules] == [4, 8, 16]
    assert rebuilt.train_schedules[2] == nd.Schedule(16, t_min=(0.0, 0.05), shift=1.0)
    rebuilt.load_state_dict(model.state_dict())
    assert nd.NTM((2,)).config()["train_steps"] is None  # the default: schedule.steps only
    old = nd.NTM((2,)).config()
    del old["train_steps"]  # a config written before train_steps existed
    assert [s.steps for s in nd.NTM.from_config(old).train_schedules] == [4]


@pytest.mark.parametrize(("train_steps", "error"), [
    (4, TypeError), ((), TypeError), ("48", TypeError), ((4, 0), ValueError),
    ((4, 2.5), ValueError), ((4, 64), ValueError),
])
def test_bad_train_steps_are_refused(train_steps, error):
    with pytest.raises(error, match="steps|t_min"):
        nd.NTM((2,), nd.Schedule(4, t_min=(0.0, 0.05)), train_steps=train_steps)
