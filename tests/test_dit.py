"""The transformer predictor: shapes, zero initialisation (the U-Net's posterior step, hence the
same NTM likelihood), attention within one level only, conditioning by labels, vectors and
masked sequences (null condition, padding, empty rows), gradients, bf16 autocast,
``torch.compile``, and the exact likelihood of an NTM built on it (float64)."""

import pytest
import torch
from _models import perturb
from hypothesis import given
from hypothesis import strategies as st

import ntmdist as nd
from ntmdist.dit import TransformerPredictor
from ntmdist.predictor import ImagePredictor, posterior_form

SHAPE = (2, 4, 4)
CONDITIONS = {"none": {}, "labels": {"classes": 3}, "vector": {"context": 5},
              "sequence": {"context": (4, 6)}}


def small(kind="labels", seed=0, scale=0.0, shape=SHAPE, **options):
    """A float64 transformer predictor with condition ``kind``, perturbed by ``scale``."""
    options = dict(patch=2, width=16, depth=2, heads=2, embedding=8) | options
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        P = TransformerPredictor(shape, **CONDITIONS[kind], **options).double()
    perturb(P, scale, seed)
    return P


def condition(kind, n, seed=0):
    """A condition ``y`` of ``kind`` for ``n`` examples, and a mask with a few padded tokens."""
    g = torch.Generator().manual_seed(seed)
    if kind == "labels":
        return torch.randint(3, (n,), generator=g), None
    if kind == "vector":
        return torch.randn(n, 5, generator=g), None
    if kind == "sequence":
        mask = torch.rand(n, 4, generator=g) < 0.7
        mask[:, 0] = True
        return torch.randn(n, 4, 6, generator=g), mask
    return None, None


def inputs(n, seed=0, shape=SHAPE):
    g = torch.Generator().manual_seed(seed)
    t = 0.1 + 0.9 * torch.rand(n, generator=g)
    return torch.randn(n, *shape, generator=g), t, t * torch.rand(n, generator=g)


def call(P, u, t, s, y, mask=None, null=None):
    """The predictor called as the conditioning design calls it: keywords only when given."""
    extra = {k: v for k, v in (("mask", mask), ("null", null)) if v is not None}
    return P(u, t, s, y, **extra)


@given(n=st.integers(0, 4), c=st.integers(1, 3), patch=st.integers(1, 2), hp=st.integers(1, 3),
       wp=st.integers(1, 3), kind=st.sampled_from(list(CONDITIONS)))
def test_shapes(n, c, patch, hp, wp, kind):
    shape = (c, hp * patch, wp * patch)
    P = small(kind, scale=0.1, shape=shape, patch=patch)
    y, mask = condition(kind, n)
    mu, log_sigma = call(P, *inputs(n, shape=shape), y, mask)
    assert mu.shape == log_sigma.shape == (n, *shape)
    assert torch.isfinite(mu).all() and torch.isfinite(log_sigma).all()


@pytest.mark.parametrize("kind", list(CONDITIONS))
def test_zero_initialised_it_is_the_unet_posterior_step(kind):
    P = small(kind)
    unet = ImagePredictor(SHAPE, classes=P.classes, width=8, embedding=8).double()
    u, t, s = inputs(5)
    y, mask = condition(kind, 5)
    mu, log_sigma = call(P, u, t, s, y, mask)
    expected = unet(u, t, s, y if kind == "labels" else None)
    assert torch.equal(mu, expected[0]) and torch.equal(log_sigma, expected[1])
    zero = torch.zeros_like(u)
    assert torch.equal(mu, posterior_form(u, t, s, zero, zero, 1e-2, 12.0)[0])


def test_untrained_ntm_has_the_unet_ntm_likelihood():
    """Same (perturbed) transporter, zero-initialised predictors: identical trajectory
    log-likelihoods, so the transformer starts from the exact reverse chain of N(0, I) data."""
    schedule = nd.Schedule(3, 0.05)
    unet = nd.NTM((1, 4, 4), schedule, classes=3,
                  transporter_options=dict(width=16, depth=1, heads=2, embedding=8),
                  predictor_options=dict(width=8, embedding=8)).double()
    perturb(unet.transporter, 0.05, 1)
    P = small(shape=(1, 4, 4))
    model = nd.NTM((1, 4, 4), schedule, classes=3, predictor=P,
                   transporter_options=dict(width=16, depth=1, heads=2, embedding=8)).double()
    model.transporter.load_state_dict(unet.transporter.state_dict())
    traj = schedule.sample(torch.randn(4, 1, 4, 4), 3, torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3])
    assert torch.equal(model(y).log_prob(traj), unet(y).log_prob(traj))


@pytest.mark.parametrize("kind", list(CONDITIONS))
def test_examples_are_independent(kind):
    """Perturbing one batch element (its level, times and condition) leaves the others' outputs
    unchanged: no attention across batch elements, hence none across levels."""
    P = small(kind, scale=0.2)
    u, t, s = inputs(4)
    y, mask = condition(kind, 4)
    before = call(P, u, t, s, y, mask)
    u2, t2, s2 = inputs(4, seed=1)
    u, t, s = u.clone(), t.clone(), s.clone()
    u[2], t[2], s[2] = u2[2], t2[2], s2[2]
    if y is not None:
        y2, mask2 = condition(kind, 4, seed=1)
        y = y.clone()
        y[2] = y2[2]
        if mask is not None:
            mask = mask.clone()
            mask[2] = mask2[2]
    after = call(P, u, t, s, y, mask)
    keep = torch.tensor([0, 1, 3])
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a[keep], b[keep])
        assert not torch.allclose(a[2], b[2])


@pytest.mark.parametrize("kind", ["labels", "vector", "sequence"])
def test_the_condition_and_the_null_condition(kind):
    P = small(kind, scale=0.2)
    u, t, s = inputs(4)
    y, mask = condition(kind, 4)
    y2, _ = condition(kind, 4, seed=1)
    out = call(P, u, t, s, y, mask)[0]
    assert not torch.allclose(out, call(P, u, t, s, y2, mask)[0])
    unconditional = call(P, u, t, s, None)[0]
    all_null = call(P, u, t, s, y, mask, null=torch.ones(4, dtype=torch.bool))[0]
    assert torch.allclose(all_null, unconditional, atol=1e-12)
    assert not torch.allclose(out, unconditional)
    null = torch.tensor([True, False, True, False])
    mixed = call(P, u, t, s, y, mask, null=null)[0]
    assert torch.allclose(mixed[null], unconditional[null], atol=1e-12)
    assert torch.allclose(mixed[~null], out[~null], atol=1e-12)
    if kind == "labels":  # the in-band null label is the null condition too
        assert torch.allclose(call(P, u, t, s, torch.full((4,), 3))[0], unconditional,
                              atol=1e-12)


def test_padding_never_reaches_the_outputs():
    P = small("sequence", scale=0.2)
    u, t, s = inputs(4)
    y, mask = condition("sequence", 4)
    assert (~mask).any()
    out = call(P, u, t, s, y, mask)
    junk = torch.where(mask[..., None], y, torch.randn_like(y) * 1e3)
    junk[~mask] = junk[~mask].index_fill(-1, torch.tensor([0]), float("nan"))
    junk.requires_grad_(True)
    again = call(P, u, t, s, junk, mask)
    assert all(torch.equal(a, b) for a, b in zip(out, again, strict=True))
    (again[0].sum() + again[1].sum()).backward()
    assert torch.equal(junk.grad[~mask], torch.zeros_like(junk.grad[~mask]))
    assert junk.grad[mask].abs().sum() > 0
    visible = y.clone()
    visible[mask] += 0.5  # a visible token does change them
    assert not torch.allclose(call(P, u, t, s, visible, mask)[0], out[0])


def test_an_all_masked_row_is_the_null_condition_and_finite():
    P = small("sequence", scale=0.2)
    u, t, s = inputs(3)
    y, mask = condition("sequence", 3)
    mask[1] = False
    y.requires_grad_(True)
    mu, log_sigma = call(P, u, t, s, y, mask)
    assert torch.isfinite(mu).all() and torch.isfinite(log_sigma).all()
    null = torch.tensor([False, True, False])
    expected = call(P, u, t, s, y, mask, null=null)
    assert torch.allclose(mu, expected[0], atol=1e-12)
    (mu.sum() + log_sigma.sum()).backward()
    assert torch.isfinite(y.grad).all() and torch.equal(y.grad[1], torch.zeros_like(y.grad[1]))


@pytest.mark.parametrize("kind", list(CONDITIONS))
def test_gradients_reach_the_inputs_the_condition_and_every_weight(kind):
    P = small(kind, scale=0.2)
    u, t, s = inputs(4)
    y, mask = condition(kind, 4)
    u.requires_grad_(True)
    if kind in ("vector", "sequence"):
        y.requires_grad_(True)
    mu, log_sigma = call(P, u, t, s, y, mask)
    (mu.square().sum() + log_sigma.sum()).backward()
    assert torch.isfinite(u.grad).all() and u.grad.abs().sum() > 0
    if y is not None and y.requires_grad:
        assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    for name, p in P.named_parameters():
        if name not in ("conditioning.null", "conditioning.null_token"):  # unused: every
            # example has its own condition
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", ["labels", "sequence"])
def test_bf16_autocast_is_finite_and_close_to_float32(kind):
    P = small(kind, scale=0.1).float()
    u, t, s = (v.float() for v in inputs(8))
    y, mask = condition(kind, 8)
    y = y if kind == "labels" else y.float()
    exact = call(P, u, t, s, y, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = call(P, u, t, s, y, mask)
    for a, b in zip(exact, low, strict=True):
        assert b.dtype == torch.float32 and torch.isfinite(b).all()
        # bf16 keeps 8 significant bits (relative spacing 2^-8); within 4 such units of the
        # float32 outputs (order one) after the network
        torch.testing.assert_close(b, a, atol=4 * 2**-8, rtol=4 * 2**-8)
        assert not torch.equal(a, b)  # autocast did run in bf16


def test_compiled_forward_and_backward_match_eager():
    P = small("sequence", scale=0.2)
    u, t, s = inputs(4)
    y, mask = condition("sequence", 4)
    compiled = torch.compile(P, backend="aot_eager", fullgraph=True)
    try:
        for fn in (P, compiled):
            v = u.clone().requires_grad_(True)
            mu, log_sigma = fn(v, t, s, y, mask=mask)
            (mu.square().sum() + log_sigma.sum()).backward()
            if fn is P:
                expected = (mu, log_sigma, v.grad)
        for a, b in zip(expected, (mu, log_sigma, v.grad), strict=True):
            torch.testing.assert_close(b, a)
    finally:
        torch._dynamo.reset()


def transformer_ntm(seed=0, scale=0.05, classes=3):
    schedule = nd.Schedule(3, 0.05)
    kind = "labels" if classes else "none"
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nd.NTM((1, 4, 4), schedule, classes=classes,
                       predictor=small(kind, shape=(1, 4, 4)),
                       transporter_options=dict(width=16, depth=1, heads=2, embedding=8))
    model = model.double()
    perturb(model, scale, seed)
    return model


def test_ntm_log_prob_is_prior_plus_conditioned_steps():
    model = transformer_ntm(seed=4)
    dist = model(torch.tensor([0, 1, 2, 3]))  # 3: the null label
    traj = model.schedule.sample(torch.randn(4, 1, 4, 4), 3, torch.Generator().manual_seed(0))
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(traj[:, -1]).sum((-3, -2, -1))
    for k in range(1, 4):
        step = dist.steps[k - 1].condition(traj[:, k])
        expected = expected + step.log_prob(traj[:, k - 1])
    assert torch.allclose(dist.log_prob(traj), expected, atol=1e-9)
    rs, lp = dist.rsample_and_log_prob(generator=torch.Generator().manual_seed(1))
    assert rs.shape == (4, 4, 1, 4, 4) and torch.allclose(lp, dist.log_prob(rs), atol=1e-8)
    guided = model.sample(3, torch.tensor([0, 1, 2]), guidance=1.5,
                          generator=torch.Generator().manual_seed(2))
    assert guided.shape == (3, 1, 4, 4) and torch.isfinite(guided).all()


def test_ntm_loss_is_one_graph():
    """(Label checks read values, ``Tensor.item``: the unconditional model is one graph.)"""
    model = transformer_ntm(classes=None)
    x0 = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    try:
        explanation = torch._dynamo.explain(model.loss)(x0)
    finally:
        torch._dynamo.reset()
    assert explanation.graph_break_count == 0, [str(b.reason) for b in
                                                explanation.break_reasons]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="patch .* must divide"):
        TransformerPredictor((1, 6, 6), patch=4)
    with pytest.raises(ValueError, match=r"width \(10\) must be divisible by heads \(4\)"):
        TransformerPredictor((1, 4, 4), width=10, heads=4)
    with pytest.raises(ValueError, match="exclusive"):
        TransformerPredictor((1, 4, 4), classes=3, context=5)
    u, t, s = inputs(2)
    with pytest.raises(ValueError, match=r"expected u_t of shape \(N, 2, 4, 4\)"):
        small()(u[:, :1], t, s)
    with pytest.raises(ValueError, match="unconditional"):
        small("none")(u, t, s, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer"):
        small("labels")(u, t, s, torch.zeros(2))
    with pytest.raises(ValueError, match=r"in 0\.\.2 \(3: the null label\)"):
        small("labels")(u, t, s, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"context vectors \(\*batch, 5\), got shape \(2, 4\)"):
        small("vector")(u, t, s, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"sequences \(\*batch, 4, 6\), got shape \(2, 3, 6\)"):
        small("sequence")(u, t, s, torch.zeros(2, 3, 6))
    with pytest.raises(TypeError, match=r"floating point"):
        small("vector")(u, t, s, torch.zeros(2, 5, dtype=torch.long))
    with pytest.raises(TypeError, match=r"mask must be a boolean tensor \(\*batch, 4\)"):
        small("sequence")(u, t, s, torch.zeros(2, 4, 6), mask=torch.ones(2, 4))
    with pytest.raises(TypeError, match=r"mask must be a boolean tensor \(\*batch, 4\)"):
        small("sequence")(u, t, s, torch.zeros(2, 4, 6), mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask= is for sequence"):
        small("vector")(u, t, s, torch.zeros(2, 5), mask=torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match=r"null must be a boolean tensor"):
        small("vector")(u, t, s, torch.zeros(2, 5), null=torch.ones(2))


def test_named_predictor_builds_the_transformer_and_the_unet():
    options = dict(patch=2, width=64, depth=5, heads=4)
    model = nd.NTM((1, 8, 8), predictor="transformer", predictor_options=options)
    P = model.predictor
    assert type(P) is nd.TransformerPredictor is TransformerPredictor
    assert (P.patch, len(P.blocks), P.blocks[0].attn.heads, P.pos.shape) == (2, 5, 4, (16, 64))
    config = model.config()
    assert config["predictor"] == "transformer" and config["predictor_options"] == options
    assert type(nd.NTM((1, 8, 8), predictor="unet").predictor) is ImagePredictor
    assert nd.NTM((1, 8, 8)).config()["predictor"] == "unet"  # still the default
    with pytest.raises(ValueError, match="predictor 'transformer' is for images"):
        nd.NTM((4,), predictor="transformer")
    with pytest.raises(ValueError, match="no features for a per-step bijector"):
        from ntmdist.transforms import MaskedAutoregressive
        nd.NTM((1, 4, 4), predictor="transformer", step_flow=MaskedAutoregressive(16, 8))


@pytest.mark.parametrize("kind", ["labels", "vector", "sequence"])
def test_config_round_trip_of_a_transformer_ntm(kind):
    """``from_config`` rebuilds the named transformer with the model's condition: the same
    parameters (strict load) and the same likelihood, for classes, vectors and sequences."""
    options = dict(patch=2, width=16, depth=2, heads=2, embedding=8)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nd.NTM((2, 4, 4), nd.Schedule(2, 0.05), **CONDITIONS[kind],
                       predictor="transformer", predictor_options=options,
                       transporter_options=dict(width=16, depth=1, heads=2, embedding=8))
    model = model.double()
    perturb(model, 0.1, 0)
    config = model.config()
    assert config["predictor"] == "transformer" and config["predictor_options"] == options
    clone = nd.NTM.from_config(config).double()
    assert type(clone.predictor) is TransformerPredictor
    clone.load_state_dict(model.state_dict())
    assert clone.config() == config
    y, mask = condition(kind, 3)
    traj = model(y, mask=mask).sample(generator=torch.Generator().manual_seed(1))
    lp = model(y, mask=mask).log_prob(traj)
    assert torch.isfinite(lp).all() and torch.equal(clone(y, mask=mask).log_prob(traj), lp)


@pytest.mark.parametrize("kind", ["labels", "vector"])
def test_state_dicts_written_before_the_shared_conditioning_load(kind):
    """The transformer kept its condition embeddings under ``embed.`` (``embed.label``,
    ``embed.vector``, ``embed.null``): such state dicts load, to the same outputs."""
    P = small(kind, scale=0.2)
    names = {"conditioning.label.": "embed.label.", "conditioning.context.": "embed.vector.",
             "conditioning.null": "embed.null"}
    old = {}
    for key, value in P.state_dict().items():
        new = next((n for n in names if key.startswith(n)), None)
        old[key if new is None else names[new] + key[len(new):]] = value
    assert any(k.startswith("embed.") for k in old)
    clone = small(kind, seed=1)
    clone.load_state_dict(old)  # strict
    u, t, s = inputs(3)
    y, _ = condition(kind, 3)
    assert all(torch.equal(a, b) for a, b in zip(clone(u, t, s, y), P(u, t, s, y), strict=True))
