"""Conditions through the training kit: a sequence-context NTM trained by ``fit`` on
``(x, y, mask)`` data (held-out loss, validation, exact resume), the data conventions with
masks, losses with and without a ``mask`` argument, a learned denoiser for context models and
the condition dropout of ``fit_velocity``."""

import math

import pytest
import torch
from _models import seeded, stop_at
from torch.utils.data import TensorDataset

import ntmdist as nd
from ntmdist import flow_matching as fm
from ntmdist.conditioning import ContextMLP
from ntmdist.distill import Denoiser
from ntmdist.training import fit, fit_denoiser, fit_velocity

SEQ = (4, 2)


def sequences(n, seed=0):
    """``x`` ``(n, 2)``: the mean of the real tokens of ``y`` ``(n, 4, 2)`` plus a little noise;
    1 to 4 real tokens per sequence, the padding NaN (a mask that did not arrive fails)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(n, *SEQ, generator=g)
    count = torch.randint(1, 5, (n,), generator=g)
    mask = torch.arange(4) < count[:, None]
    x = torch.where(mask[..., None], y, 0.0).sum(1) / count[:, None]
    x = x + 0.1 * torch.randn(n, 2, generator=g)
    return x, torch.where(mask[..., None], y, math.nan), mask


def sequence_model(seed=0, **options):
    with seeded(seed):
        return nd.NTM((2,), nd.Schedule(2, 0.05), context=SEQ, step_flow=None,
                      predictor_options=dict(width=32, depth=1, embedding=16),
                      transporter_options=dict(hidden=(16, 16), bins=4), **options)


def heldout_loss(model, x, y, mask):
    model.eval()
    try:
        with torch.no_grad():
            return model.loss(x, y, generator=torch.Generator().manual_seed(3), mask=mask).item()
    finally:
        model.train()


def test_fit_trains_a_sequence_context_model_with_masks():
    data, held = sequences(2048), sequences(512, seed=1)
    model = sequence_model()
    before = heldout_loss(model, *held)
    result = fit(model, data, steps=60, batch_size=64, lr=3e-3, warmup=5, ema=None,
                 progress=False, validation=held, validate_every=20)
    after = heldout_loss(model, *held)
    x, y, mask = held
    shuffled = torch.randperm(len(x), generator=torch.Generator().manual_seed(4))
    other = heldout_loss(model, x, y[shuffled], mask[shuffled])
    # the untrained predictor ignores the condition (zero-initialised output, ~3.3 nats/dim);
    # trained, the held-out loss drops by more than a nat (to ~2.2) and depends on the
    # contexts: with another example's sequence it is far worse (~5.8)
    assert after < before - 0.5 and after < other - 1.0, (before, after, other)
    validation = [v["loss"] for v in result.history["validation"]]
    assert len(validation) == 3 and validation[-1] < validation[0] - 0.3, validation


def test_resume_with_masks_is_bitwise_exact(tmp_path):
    data, held = sequences(256), sequences(64, seed=1)
    kwargs = dict(steps=6, batch_size=32, warmup=2, seed=5, progress=False, validation=held,
                  validate_every=2, patience=5)
    straight = fit(sequence_model(), data, **kwargs)
    path = tmp_path / "run.pt"
    with pytest.raises(KeyboardInterrupt):
        fit(sequence_model(), data, checkpoint=path, checkpoint_every=3, callback=stop_at(3),
            **kwargs)
    resumed = fit(sequence_model(seed=7), data, checkpoint=path, resume=True, **kwargs)
    assert resumed.step == 6 and resumed.history == straight.history
    for a, b in [(straight.model, resumed.model), (straight.ema_model, resumed.ema_model)]:
        for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            assert torch.equal(v, w), k


class Recorder(torch.nn.Module):
    """``loss(x, y, generator, mask)`` of a one-parameter model, recording what it gets."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2))
        self.calls = []

    def loss(self, x, y=None, generator=None, **kwargs):
        self.calls.append((x, y, kwargs.get("mask", "absent")))
        return (x - self.w).square().mean()


def _draw(x, y, mask):
    def draw(n, generator):
        idx = torch.randint(len(x), (n,), generator=generator)
        return x[idx], y[idx], mask[idx]

    return draw


@pytest.mark.parametrize("kind", ["tensors", "dataset", "callable", "pairs"])
def test_masks_reach_the_loss_only_when_the_data_has_them(kind):
    x, y, mask = sequences(40)
    data = {"tensors": (x, y, mask), "dataset": TensorDataset(x, y, mask),
            "callable": _draw(x, y, mask), "pairs": (x, y)}[kind]
    model = Recorder()
    fit(model, data, steps=3, batch_size=8, progress=False)
    assert len(model.calls) == 3
    for xb, yb, mb in model.calls:
        assert xb.shape == (8, 2) and yb.shape == (8, *SEQ)
        if kind == "pairs":
            assert mb == "absent"  # no mask: losses written for (x, y) are called as before
        else:  # rows of x, y and mask stay together: NaN exactly in the padding
            assert mb.shape == (8, 4) and mb.dtype == torch.bool
            assert torch.equal(yb.isnan().any(-1), ~mb)


def test_loss_fn_with_and_without_a_mask_argument():
    data = sequences(40)
    model = sequence_model()
    seen = []

    def with_mask(m, x, y, generator, mask):
        seen.append(mask.shape)
        return m.loss(x, y, generator=generator, mask=mask)

    fit(model, data, steps=2, batch_size=8, loss_fn=with_mask, progress=False)
    assert seen == [(8, 4), (8, 4)]
    with pytest.raises(TypeError, match="takes no mask= argument"):
        fit(model, data, steps=1, batch_size=8, loss_fn=lambda m, x, y: m.loss(x, y),
            progress=False)
    x, y, _ = data  # without masks (every token real) the same loss_fn is called as before
    result = fit(model, (x, torch.nan_to_num(y)), steps=1, batch_size=8, progress=False,
                 loss_fn=lambda m, x, y: m.loss(x, y))
    assert result.step == 1


@pytest.mark.parametrize("kind", ["sequence", "context_net"])
def test_learned_denoiser_for_a_context_model(kind):
    if kind == "sequence":
        model, data = sequence_model(), sequences(512)
        y, mask = data[1][:4], data[2][:4]
    else:
        x, y, _ = sequences(512)
        obs = torch.nan_to_num(y).flatten(1)
        with seeded(0):
            model = nd.NTM((2,), nd.Schedule(2, 0.05), context=3, step_flow=None,
                           context_net=ContextMLP(8, 3, hidden=(16,)),
                           predictor_options=dict(width=32, depth=1, embedding=16),
                           transporter_options=dict(hidden=(16, 16), bins=4))
        data, y, mask = (x, obs), obs[:4], None
    fit(model, data, steps=20, batch_size=64, lr=3e-3, ema=None, progress=False)
    result = fit_denoiser(model, data, steps=30, batch_size=64, lr=3e-3, ema=None,
                          progress=False)
    denoiser = model.denoiser
    assert isinstance(denoiser, Denoiser) and denoiser.conditioning.spec == model.condition
    loss = result.history["loss"]
    assert sum(loss[-5:]) < sum(loss[:5]), loss
    assert all(p.requires_grad for p in model.parameters())  # unfrozen again
    for condition, m in ((y, mask), (y[0], None if mask is None else mask[0])):
        drawn = model.sample(4, condition, mask=m, denoise="learned",
                             generator=torch.Generator().manual_seed(0))
        assert drawn.shape == (4, 2) and torch.isfinite(drawn).all()
    clone = nd.NTM.from_config(model.config())
    clone.load_state_dict(model.state_dict())  # strict: the denoiser is rebuilt with its context
    assert clone.config() == model.config()


def test_fit_velocity_condition_dropout_and_its_old_name():
    x, y, mask = sequences(64)
    nulls = []
    for options in (dict(condition_dropout=0.5), dict(label_dropout=0.5), {}):
        v = fm.Velocity(2, width=16, depth=1, embedding=8, context=SEQ)
        hook = v.register_forward_pre_hook(lambda m, a, k: nulls.append(k.get("null")),
                                           with_kwargs=True)
        fit_velocity(v, (x, y, mask), steps=1, batch_size=64, seed=2, progress=False,
                     **options)
        hook.remove()
    assert torch.equal(nulls[0], nulls[1]) and 0 < nulls[0].sum() < 64
    assert nulls[2] is None  # no dropout by default
    with pytest.raises(TypeError, match="not both"):
        fit_velocity(v, (x, y, mask), steps=1, condition_dropout=0.1, label_dropout=0.1)
    with pytest.raises(TypeError, match="not both"):
        fm.velocity_loss(v, x, y, mask=mask, label_dropout=0.1, condition_dropout=0.1)
