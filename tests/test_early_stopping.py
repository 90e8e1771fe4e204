"""fit's validation and early stopping: the held-out loss is the mean over every example (eval
mode, fixed noise), a run that overfits stops and gets the weights of its best validation back,
and a run interrupted mid-way resumes bitwise."""

import pytest
import torch
from _models import stop_at, tiny
from torch import nn

from ntmdist.training import checkpoint as ckpt
from ntmdist.training import fit

EVERY, PATIENCE = 5, 3


class Drift(nn.Module):
    """A location ``w`` fitted by ``mean((x - w)^2)``; records the weights before each update
    (``seen[n]``: after ``n`` steps) and the mode of every loss call."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(2))
        self.seen, self.modes = [], []

    def loss(self, x, y=None, generator=None):
        self.modes.append(self.training)
        if self.training:
            self.seen.append(self.w.detach().clone())
        return (x - self.w).square().mean()


def data(seed=0):
    """Training data around 2, held-out data around 1 (10 examples: batches of 4, 4 and 2):
    moving from 0 towards 2, the model passes the held-out optimum and then overfits."""
    g = torch.Generator().manual_seed(seed)
    return 2 + 0.1 * torch.randn(64, 2, generator=g), 1 + 0.1 * torch.randn(10, 2, generator=g)


def run(model, **kwargs):
    train, held = data()
    options = dict(steps=200, batch_size=4, lr=0.05, warmup=0, grad_clip=None, ema=None,
                   validation=held, validate_every=EVERY, patience=PATIENCE, progress=False)
    return fit(model, train, **(options | kwargs))


def test_an_overfitting_run_stops_and_restores_its_best_weights():
    model = Drift()
    result = run(model)
    held = data()[1]
    validation = result.history["validation"]
    steps = [v["step"] for v in validation]
    values = [v["loss"] for v in validation]
    assert steps == list(range(EVERY, result.step + 1, EVERY))
    for step, value in zip(steps[:-1], values[:-1], strict=True):  # the mean over all 10
        assert value == pytest.approx((held - model.seen[step]).square().mean().item(),
                                      rel=1e-12, abs=0)
    best = min(range(len(values)), key=values.__getitem__)
    assert result.best_step == steps[best] and 0 < best < len(values) - 1
    assert all(v >= values[best] for v in values[best + 1:])  # then no improvement...
    assert result.step == result.best_step + PATIENCE * EVERY < 200  # ...for PATIENCE checks
    loss = result.history["loss"]
    assert loss[-1] < loss[result.best_step - 1]  # the training loss still fell: overfitting
    assert torch.equal(model.w, model.seen[result.best_step])  # the best weights, restored
    assert model.modes.count(False) == 3 * len(values)  # eval mode, batches of 4, 4 and 2
    assert model.training


def test_with_ema_the_ema_copy_is_validated_and_restored():
    model = Drift()
    result = run(model, ema=0.9)
    held = data()[1]
    values = [v["loss"] for v in result.history["validation"]]
    assert result.step < 200 and model.modes.count(False) == 0  # the EMA copy was validated
    restored = (held - result.ema_model.w).square().mean().item()
    assert restored == pytest.approx(min(values), rel=1e-12, abs=0)
    assert torch.equal(model.w, model.seen[result.best_step])


def test_validation_noise_is_the_same_at_every_check():
    """At lr = 0 the weights never move, so every validation of the (random) NTM loss must
    give the same value: the noise is drawn from a generator seeded the same way each time."""
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    held = torch.randn(10, 2, generator=torch.Generator().manual_seed(2))
    result = fit(tiny(seed=0), x, steps=6, batch_size=8, lr=0.0, validation=held,
                 validate_every=2, progress=False)
    values = [v["loss"] for v in result.history["validation"]]
    assert len(values) == 3 and len(set(values)) == 1
    model = tiny(seed=0).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        other = [model.loss(held, generator=g).item() for _ in range(2)]
    assert other[0] != other[1]  # the loss itself is random


def test_resume_mid_run_is_the_uninterrupted_run(tmp_path):
    straight = run(Drift(), ema=0.9, seed=3)
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):  # after two validations, before the stop
        run(Drift(), ema=0.9, seed=3, checkpoint=path, checkpoint_every=4, callback=stop_at(12))
    assert ckpt.load_checkpoint(path)["validation"]["best_step"] == 10
    resumed = run(Drift(), ema=0.9, seed=3, checkpoint=path, checkpoint_every=4, resume=True)
    assert resumed.step == straight.step < 200 and resumed.best_step == straight.best_step
    assert resumed.history == straight.history
    for a, b in ((straight.model, resumed.model), (straight.ema_model, resumed.ema_model)):
        assert torch.equal(a.w, b.w)
    again = Drift()  # a stopped run resumes to where it stopped, without training
    done = run(again, ema=0.9, seed=3, checkpoint=path, resume=True)
    assert done.step == straight.step and again.seen == []
    assert torch.equal(again.w, resumed.model.w)


def test_validate_every_defaults_to_about_an_epoch():
    train, held = data()
    result = fit(Drift(), train, steps=10, batch_size=16, validation=held, progress=False)
    assert [v["step"] for v in result.history["validation"]] == [4, 8, 10]  # 64 / 16 = 4
    assert result.best_step is not None and result.step == 10  # no patience: no stop


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(patience=2), ValueError, "validation"),
    (dict(validate_every=2), ValueError, "validation"),
    (dict(validation=lambda n, g: torch.zeros(n, 2), validate_every=1), TypeError, "held-out"),
    (dict(validation=torch.zeros(4, 2), patience=0), ValueError, "patience"),
    (dict(data=lambda n, g: torch.zeros(n, 2), validation=torch.zeros(4, 2)), ValueError,
     "validate_every"),
])
def test_bad_validation_arguments(kwargs, error, match):
    args = dict(model=Drift(), data=torch.zeros(8, 2), steps=2, batch_size=2,
                progress=False) | kwargs
    with pytest.raises(error, match=match):
        fit(**args)
