"""Conditioning on labels, context vectors and sequences: exactness in float64 against brute
force (quadrature, per-context values, finite differences, the Gaussian guidance combination),
shapes, errors, condition dropout, configs and old state dicts."""

import copy
import functools
import math

import pytest
import torch
from _models import perturb
from hypothesis import given
from hypothesis import strategies as st

import ntmdist as nd
from ntmdist import flow_matching as fm
from ntmdist.conditioning import Conditioning, ConditionSpec, ContextMLP
from ntmdist.distill import Denoiser
from ntmdist.guidance import combine
from ntmdist.schedule import posterior_coefficients

SEQ = (4, 3)  # sequences of L = 4 tokens of E = 3 features


def context_model(context=3, features=1, steps=2, t_min=0.1, step_flow=False,
                  condition_transporter=False, seed=0, scale=0.3, context_net=None):
    """A small float64 NTM conditioned on ``context`` (C or (L, E)) with perturbed weights, built
    through the default constructors (so configs rebuild it)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nd.NTM(
            (features,), nd.Schedule(steps, t_min), context=context, context_net=context_net,
            step_flow="auto" if step_flow else None,
            predictor_options=dict(width=32, depth=1, embedding=16, sigma_min=0.2),
            transporter_options=dict(hidden=(16, 16), bins=4),
            step_flow_options=dict(hidden=[16], bins=4) if step_flow else None,
            condition_transporter=condition_transporter,
        ).double()
    perturb(model, scale, seed)
    return model


def contexts(context, batch, seed=0):
    """Random contexts of batch shape ``batch`` and, for sequences, a mask with at least one
    real token per sequence."""
    g = torch.Generator().manual_seed(seed)
    if isinstance(context, int):
        return torch.randn(*batch, context, generator=g), None
    y = torch.randn(*batch, *context, generator=g)
    mask = torch.rand(*batch, context[0], generator=g) < 0.6
    mask[..., 0] = True
    return y, mask


KINDS = [(3, False, False), (3, True, False), (3, False, True), (SEQ, False, False),
         (SEQ, True, True)]


@pytest.mark.parametrize(("context", "step_flow", "condition_transporter"), KINDS)
@pytest.mark.parametrize("k", [1, 2])
def test_each_conditioned_step_integrates_to_one(context, step_flow, condition_transporter, k):
    """Quadrature of every step density, for three fixed contexts and the null condition.

    Operating range: perturbations of scale 0.15, which keep every density resolvable on the
    grid (at 0.3 the per-step bijector, conditioned on 64 predictor features, makes densities
    peak near 1000, and the trapezoid rule needs ten times more nodes)."""
    model = context_model(context, step_flow=step_flow,
                          condition_transporter=condition_transporter, seed=k, scale=0.15)
    y, mask = contexts(context, (3,), seed=k)
    x_t = torch.tensor([[-1.3], [0.4], [2.0]])
    x = torch.linspace(-12, 12, 48001)
    for dist in (model(y, mask=mask), model()):
        cond = dist.steps[k - 1].condition(x_t if dist.batch_shape else x_t[:1])
        with torch.no_grad():
            mass = torch.trapezoid(cond.log_prob(x[:, None, None]).exp(), x, dim=0)
        assert torch.allclose(mass, torch.ones_like(mass), atol=1e-6), mass


@pytest.mark.parametrize(("context", "step_flow", "condition_transporter"), KINDS)
def test_log_prob_of_a_batch_of_contexts_is_the_per_context_values(
        context, step_flow, condition_transporter):
    model = context_model(context, features=2, steps=3, step_flow=step_flow,
                          condition_transporter=condition_transporter, seed=3)
    y, mask = contexts(context, (4,), seed=1)
    dist = model(y, mask=mask)
    traj, lp = dist.rsample_and_log_prob((2,), generator=torch.Generator().manual_seed(0))
    assert traj.shape == (2, 4, 4, 2)
    assert torch.allclose(lp, dist.log_prob(traj), atol=1e-9)
    for i in range(4):
        one = model(y[i], mask=None if mask is None else mask[i])
        assert torch.allclose(one.log_prob(traj[:, i]), lp[:, i], atol=1e-10, rtol=0)
    step = dist.steps[0].condition(traj[:, :, 1])  # the steps carry the condition
    assert step.batch_shape == (2, 4)
    assert torch.allclose(step.log_prob(traj[:, :, 0]), dist.log_prob_levels(traj)[..., 1],
                          atol=1e-10)
    assert not torch.allclose(lp[:, 0], model(y[1], mask=None if mask is None else mask[1])
                              .log_prob(traj[:, 0]))  # the context matters


@pytest.mark.parametrize(("context", "condition_transporter"),
                         [(3, False), (3, True), (SEQ, False), (SEQ, True)])
def test_gradient_with_respect_to_the_context_matches_finite_differences(
        context, condition_transporter):
    """Operating range: perturbations of scale 0.15 (at 0.3 the conditioned transporter's
    log-density has gradients in the thousands and third derivatives that put central
    differences with eps = 1e-6 off in the sixth digit)."""
    model = context_model(context, features=2, step_flow=True,
                          condition_transporter=condition_transporter, seed=4, scale=0.15)
    y, mask = contexts(context, (2,), seed=2)
    traj = model(y, mask=mask).sample(generator=torch.Generator().manual_seed(1))
    y = y.requires_grad_(True)
    (grad,) = torch.autograd.grad(model(y, mask=mask).log_prob(traj).sum(), y)
    eps, fd = 1e-6, torch.zeros_like(y)
    with torch.no_grad():
        for i in range(y.numel()):
            e = torch.zeros(y.numel())
            e[i] = eps
            e = e.reshape(y.shape)
            up = model(y + e, mask=mask).log_prob(traj).sum()
            down = model(y - e, mask=mask).log_prob(traj).sum()
            fd.view(-1)[i] = (up - down) / (2 * eps)
    assert grad.abs().max() > 1e-3
    assert torch.allclose(grad, fd, atol=1e-6, rtol=1e-6)
    if mask is not None:  # masked-out tokens get no gradient
        assert torch.equal(grad[~mask], torch.zeros_like(grad[~mask]))


@functools.cache
def _shape_model(context, step_flow):
    return context_model(context, features=2, step_flow=step_flow, seed=1)


@given(
    kind=st.sampled_from(["labels", "vector", "sequence"]),
    sample_shape=st.lists(st.integers(1, 3), max_size=2).map(tuple),
    batch_shape=st.lists(st.integers(1, 3), max_size=2).map(tuple),
    step_flow=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_shapes_for_drawn_batch_shapes_of_conditions(kind, sample_shape, batch_shape, step_flow,
                                                     seed):
    if kind == "labels":
        model = label_model(step_flow)
        g = torch.Generator().manual_seed(seed)
        y, mask = torch.randint(4, batch_shape, generator=g), None
    else:
        context = 3 if kind == "vector" else SEQ
        model = _shape_model(context, step_flow)
        y, mask = contexts(context, batch_shape, seed)
    dist = model(y, mask=mask)
    assert dist.batch_shape == batch_shape and dist.event_shape == (3, 2)
    traj = dist.rsample(sample_shape)
    assert traj.shape == sample_shape + batch_shape + (3, 2)
    assert dist.log_prob(traj).shape == sample_shape + batch_shape
    single = traj.reshape(-1, 3, 2)[0]
    assert dist.log_prob(single).shape == batch_shape
    expanded = dist.expand((2, *batch_shape))
    assert expanded.batch_shape == (2, *batch_shape)
    assert torch.allclose(expanded.log_prob(single)[1], dist.log_prob(single))
    x = traj.select(-2, 0)
    g = torch.Generator().manual_seed(seed)
    assert model.iwae(x, y, particles=2, generator=g, mask=mask).shape == x.shape[:-1]
    assert model.elbo(x, y, generator=g, mask=mask).shape == x.shape[:-1]


@functools.cache
def label_model(step_flow=False):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nd.NTM((2,), nd.Schedule(2, 0.1), classes=3, step_flow="auto" if step_flow
                       else None, predictor_options=dict(width=16, depth=1, embedding=8),
                       transporter_options=dict(hidden=(16, 16), bins=4),
                       step_flow_options=dict(hidden=[16], bins=4) if step_flow else None)
    perturb(model, 0.3, 0)
    return model


@pytest.mark.parametrize("kind", ["labels", "vector", "sequence", "none"])
def test_bounds_accept_one_event_or_any_batch(kind):
    """Issue 23: ``elbo``/``iwae`` of ``x`` ``event``, ``(n, *event)`` and ``(a, b, *event)``
    have that batch shape and the values of the same examples in another batch shape (the same
    draws)."""
    model = label_model() if kind == "labels" else context_model(
        {"vector": 3, "sequence": SEQ, "none": None}[kind], features=2)
    x = torch.randn(2, 3, 2, generator=torch.Generator().manual_seed(0))
    y, mask = None, None
    if kind == "labels":
        y = torch.tensor([[0, 1, 2], [2, 0, 1]])
    elif kind != "none":
        y, mask = contexts(3 if kind == "vector" else SEQ, (2, 3))
    for bound in (model.elbo, model.iwae):
        def run(xs, ys, ms, bound=bound):
            return bound(xs, ys, particles=3, generator=torch.Generator().manual_seed(1),
                         mask=ms)
        full = run(x, y, mask)
        assert full.shape == (2, 3) and torch.isfinite(full).all()
        flat = run(x.reshape(6, 2), None if y is None else y.reshape(6, *y.shape[2:]),
                   None if mask is None else mask.reshape(6, -1))
        assert flat.shape == (6,) and torch.allclose(flat, full.reshape(6), atol=1e-12)
        one = run(x[1, 2], None if y is None else y[1, 2], None if mask is None else mask[1, 2])
        first = run(x[1, 2:], None if y is None else y[1, 2:],
                    None if mask is None else mask[1, 2:])
        assert one.shape == () and torch.allclose(one, first[0], atol=1e-12)
    with pytest.raises(ValueError, match="at least one example|data must have shape"):
        model.loss(x[0, 0], None if y is None else y[0, 0])


def test_bad_conditions_get_clear_errors():
    vec, seq, labels = context_model(3), context_model(SEQ), label_model()
    y = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"context vectors \(\*batch, 3\), got shape \(2, 4\)"):
        vec(torch.randn(2, 4))
    nan = y.clone()
    nan[1, 2] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        vec(nan)
    with pytest.raises(ValueError, match="NaN"):
        vec.loss(torch.randn(2, 1), nan)
    with pytest.raises(TypeError, match="integer labels are for models with classes="):
        vec(torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer tensor"):
        labels(y)
    with pytest.raises(ValueError, match="unconditional"):
        nd.NTM((2,))(y)
    with pytest.raises(TypeError, match="has dtype torch.float32"):
        vec(y.float())
    s = torch.randn(2, *SEQ)
    with pytest.raises(ValueError, match=r"sequences \(\*batch, 4, 3\)"):
        seq(torch.randn(2, 4, 2))
    bad = s.clone()
    bad[1, 0, 2] = math.inf
    with pytest.raises(ValueError, match="NaN or inf"):  # in a real token
        seq(bad, mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask must be a boolean tensor"):
        seq(s, mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match=r"mask must have shape \(\*batch, 4\)"):
        seq(s, mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask must have shape"):
        seq(s, mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask= is for sequence contexts"):
        vec(y, mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="no condition"):
        seq(mask=torch.ones(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="exclusive"):
        nd.NTM((2,), classes=3, context=2)
    with pytest.raises(TypeError, match=r"context must be C"):
        nd.NTM((2,), context=(1, 2, 3))
    with pytest.raises(ValueError, match="context_net"):
        nd.NTM((2,), context_net=torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="does not broadcast to the data batch"):
        vec.elbo(torch.randn(3, 1), y)
    with pytest.raises(ValueError, match="one context or 5 contexts"):
        vec.sample(5, y)
    with pytest.raises(ValueError, match="guidance needs a condition"):
        vec(guidance=1.0).sample()
    with pytest.raises(ValueError, match="condition_transporter=True needs a condition"):
        nd.NTM((2,), condition_transporter=True)
    with pytest.raises(ValueError, match="unknown predictor 'nope'"):
        nd.NTM((2,), predictor="nope")
    with pytest.raises(ValueError, match=r"predictor 'unet' is for images \(C, H, W\)"):
        nd.NTM((2,), predictor="unet")
    with pytest.raises(TypeError, match="not both"):
        nd.NTM((2,), train_steps=(2,), train_T=(2,))


def test_masked_out_tokens_change_nothing():
    model = context_model(SEQ, features=2, step_flow=True, condition_transporter=True, seed=5)
    y, mask = contexts(SEQ, (3,), seed=3)
    mask[:, 2:] = False
    traj = model(y, mask=mask).sample((2,), generator=torch.Generator().manual_seed(0))
    garbage = torch.where(mask[..., None], y, torch.full_like(y, math.nan))
    garbage[0, 3] = 1e30
    lp = model(y, mask=mask).log_prob(traj)
    assert torch.equal(model(garbage, mask=mask).log_prob(traj), lp)
    empty = torch.zeros(3, 4, dtype=torch.bool)  # no real token: the null condition
    assert torch.allclose(model(y, mask=empty).log_prob(traj), model().log_prob(traj),
                          atol=1e-12)


@pytest.mark.parametrize("context", [3, SEQ])
def test_guidance_for_contexts_is_the_exact_gaussian_combination(context):
    model = context_model(context, features=2, steps=3, seed=6)
    y, mask = contexts(context, (4,), seed=4)
    x_t = torch.randn(4, 2, generator=torch.Generator().manual_seed(2))
    step = model(y, mask=mask, guidance=1.5).steps[2].condition(x_t)
    s, t = model.schedule.grid[2], model.schedule.grid[3]
    u_t = model.transporter(t.expand(4))(x_t)
    extra = {} if mask is None else {"mask": mask}
    cond = model.predictor(u_t, t.expand(4), s.expand(4), y, **extra)
    null = model.predictor(u_t, t.expand(4), s.expand(4), None)
    ones = torch.ones(4, dtype=torch.bool)
    twin = model.predictor(u_t, t.expand(4), s.expand(4), y, null=ones, **extra)
    assert all(torch.equal(a, b) for a, b in zip(null, twin, strict=True))
    assert not torch.allclose(cond[0], null[0])
    mu, ls = combine(*cond, *null, 1.5)
    base = step.base_dist.base_dist
    assert torch.allclose(base.loc, mu, atol=1e-12)
    assert torch.allclose(base.scale.log(), ls, atol=1e-12)
    assert model.sample(4, y, guidance=1.5, mask=mask).shape == (4, 2)


@pytest.mark.parametrize("context", [3, SEQ])
def test_condition_dropout_draws_from_the_loss_generator(context):
    model = nd.NTM((2,), nd.Schedule(2, 0.05), context=context, condition_dropout=0.3,
                   predictor_options=dict(width=16, depth=1))
    seen = []
    model.predictor.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs.get("null")), with_kwargs=True)
    y, mask = contexts(context, (4000,))
    x = torch.randn(4000, 2)
    model.train()
    for _ in range(2):
        model.loss(x, y, generator=torch.Generator().manual_seed(0), mask=mask)
    assert torch.equal(seen[-1], seen[-2])  # the same draws for the same seed
    model.loss(x, y, generator=torch.Generator().manual_seed(1), mask=mask)
    assert not torch.equal(seen[-1], seen[-2])
    dropped = seen[-1].reshape(4000, 2).T.double()  # predictor batch: (example, step)
    assert torch.equal(dropped[0], dropped[1])  # every step of an example agrees
    assert abs(dropped[0].mean().item() - 0.3) < 5 * math.sqrt(0.3 * 0.7 / 4000)
    model.eval()
    model.loss(x, y, generator=torch.Generator().manual_seed(0), mask=mask)
    assert seen[-1] is None
    assert nd.NTM((2,), context=3).condition_dropout == 0.0
    assert nd.NTM((2,), classes=3, label_dropout=0.2).condition_dropout == 0.2


def test_context_net_maps_observations_and_trains_jointly():
    net = ContextMLP((2, 5), 3, hidden=(8,))
    model = context_model(3, features=2, context_net=net)
    obs = torch.randn(6, 2, 5)
    dist = model(obs)
    assert dist.batch_shape == (6,) and torch.allclose(dist.y, model.context_net(obs))
    model.loss(torch.randn(6, 2), obs, generator=torch.Generator().manual_seed(0)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    with pytest.raises(ValueError, match=r"observations must have shape \(\*batch, 2, 5\)"):
        model(torch.randn(6, 5))
    custom = context_model(3, features=2, context_net=torch.nn.Linear(4, 3).double())
    assert custom.config()["context_net"] == "custom"
    with pytest.raises(ValueError, match="context_net"):
        nd.NTM.from_config(custom.config())


@pytest.mark.parametrize("build", [
    lambda: label_model(True),
    lambda: context_model(3, features=2, step_flow=True),
    lambda: context_model(SEQ, features=2, condition_transporter=True),
    lambda: context_model(3, features=2, context_net=ContextMLP(4, 3, hidden=(8,))),
    lambda: nd.NTM((1, 4, 4), context=SEQ, predictor_options=dict(width=8, embedding=8),
                   transporter_options=dict(width=16, depth=1)).double(),
])
def test_config_round_trip_for_each_kind(build):
    model = copy.deepcopy(build())
    perturb(model, 0.1, 0)
    config = model.config()
    clone = nd.NTM.from_config(config).double()
    clone.load_state_dict(model.state_dict())  # strict: the same networks
    assert clone.config() == config
    spec = model.condition
    y = torch.tensor([0, 2]) if spec.kind == "labels" else None
    if spec.kind != "labels":
        y = torch.randn(2, 4) if model.context_net is not None else contexts(spec.context, (2,))[0]
    traj = model(y).sample((3,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(clone(y).log_prob(traj), model(y).log_prob(traj))


def test_state_dicts_of_earlier_label_models_load():
    """Earlier versions kept the label embedding at ``label.weight`` of each network."""
    model = copy.deepcopy(label_model(True))
    model.denoiser = Denoiser(2, classes=3, width=8, depth=1)
    velocity = fm.Velocity(2, classes=3, width=8, depth=1, embedding=8)
    fm_model = nd.NTM.from_flow_matching(velocity, nd.Schedule(2, 0.1),
                                         predictor_options=dict(width=8, depth=1))
    for m in (model, fm_model):
        perturb(m, 0.1, 1)
        old = {k.replace("conditioning.label.", "label."): v for k, v in m.state_dict().items()}
        assert sum(".label.weight" in k for k in old) >= 2
        clone = nd.NTM.from_config(m.config()).double()
        clone.load_state_dict(old)
        assert all(torch.equal(a, b) for a, b in
                   zip(clone.state_dict().values(), m.state_dict().values(), strict=True))


@pytest.mark.parametrize("context", [2, (3, 2)])
def test_from_flow_matching_with_a_context_is_exact_at_initialisation(context):
    with torch.random.fork_rng():
        torch.manual_seed(0)
        v = fm.Velocity(3, width=16, depth=1, embedding=8, context=context)
    perturb(v, 0.5, 0)
    schedule = nd.Schedule(4, t_min=0.05)
    model = nd.NTM.from_flow_matching(v, schedule)
    assert model.condition == v.conditioning.spec and model.config()["velocity"] == v.config()
    y, mask = contexts(context, (6,), seed=5)
    extra = {} if mask is None else {"mask": mask}
    dist = model(y, mask=mask)
    g = torch.Generator().manual_seed(1)
    grid = schedule.grid.tolist()
    for k in range(1, schedule.steps + 1):
        s, t = grid[k - 1], grid[k]
        x_t = torch.randn(6, 3, generator=g) * 2
        step = dist.steps[k - 1].condition(x_t)
        a, b, c = posterior_coefficients(torch.tensor(s), torch.tensor(t))
        x0 = x_t - t * v(x_t, torch.full((6,), t), y, **extra)
        base = step.base_dist.base_dist
        assert torch.allclose(base.loc, a * x_t + b * x0, atol=1e-10, rtol=0)
        assert torch.allclose(base.scale, c.expand(6, 3), atol=1e-10, rtol=0)
    assert not torch.allclose(v(x_t, torch.full((6,), 0.5), y, **extra),
                              v(x_t, torch.full((6,), 0.5)))
    with pytest.raises(ValueError, match="same classes= or context="):
        nd.NTM.from_flow_matching(v, schedule, context=5)


def test_conditioned_transporter_is_a_bijection_for_each_context():
    model = context_model(3, features=3, condition_transporter=True, seed=7)
    f = model.transporter
    y, _ = contexts(3, (4,), seed=6)
    condition = model.encode(y)
    t = torch.tensor([0.1, 0.4, 0.7, 0.9])
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))
    bij = f(t, condition)
    u, ladj = bij.call_and_ladj(x)
    jac = torch.stack([torch.autograd.functional.jacobian(
        lambda v, i=i: f(t[i:i + 1], model.encode(y[i:i + 1]))(v[None])[0], x[i])
        for i in range(4)])
    assert torch.allclose(ladj, torch.linalg.slogdet(jac)[1], atol=1e-10)
    assert torch.allclose(bij.inv(u), x, atol=1e-10)
    assert not torch.allclose(u, f(t, model.encode(y.flip(0)))(x))  # depends on the context
    assert torch.equal(f(torch.ones(4), condition)(x), x)  # the identity at t = 1
    assert not torch.allclose(u, f(t)(x))  # y=None: the learned null condition


def test_conditioning_adds_no_pass():
    """One predictor call and one transporter call per ``log_prob``, with or without a
    condition and with guidance (the null twin runs in the same batch)."""
    calls = []
    for model, y in ((context_model(3, features=2), None),
                     (context_model(3, features=2), torch.randn(5, 3)),
                     (context_model(SEQ, features=2, condition_transporter=True),
                      torch.randn(5, *SEQ))):
        hooks = [m.register_forward_hook(lambda *a, m=m: calls.append(m))
                 for m in (model.predictor, model.transporter)]
        for guidance in (0.0, 2.0) if y is not None else (0.0,):
            calls.clear()
            model(y, guidance=guidance).log_prob(torch.randn(5, 3, 2))
            assert calls == [model.transporter, model.predictor]
        for h in hooks:
            h.remove()


def test_embedded_vector_and_tokens_for_other_predictors():
    """What a transformer predictor obtains: ``conditioning((t, s), y, mask, null)`` returns
    the vector ``(n, F)``, tokens ``(n, L, E)`` and mask ``(n, L)``; null rows get the learned
    null token everywhere (and an all-True mask)."""
    embed = Conditioning(ConditionSpec.of(context=SEQ), times=2, embedding=8).double()
    perturb(embed, 0.3, 0)
    y, mask = contexts(SEQ, (3,))
    t = torch.rand(3)
    null = torch.tensor([False, True, False])
    vector, tokens, out_mask = embed((t, t), y, mask, null)
    assert vector.shape == (3, embed.features) == (3, 24) and tokens.shape == (3, 4, 8)
    assert torch.equal(out_mask, mask | null[:, None])
    assert torch.equal(tokens[1], embed.null_token.expand(4, 8))
    none = embed((t, t))
    assert torch.equal(none.vector[1], vector[1]) and torch.equal(none.tokens[1], tokens[1])
    assert Conditioning(times=1, embedding=8)((t,)).tokens is None


def test_image_predictor_attends_to_sequence_tokens():
    model = nd.NTM((1, 4, 4), nd.Schedule(2, 0.1), context=SEQ,
                   predictor_options=dict(width=8, embedding=8),
                   transporter_options=dict(width=16, depth=1)).double()
    perturb(model, 0.2, 0)
    y, mask = contexts(SEQ, (3,))
    traj = model(y, mask=mask).sample(generator=torch.Generator().manual_seed(0))
    lp = model(y, mask=mask).log_prob(traj)
    moved = y.clone()
    moved[:, 1] = moved[:, 1] + 1.0 * mask[:, 1:2]  # change a real token: the density changes
    assert not torch.allclose(model(moved, mask=mask).log_prob(traj), lp)
    assert model.sample(3, y, mask=mask, guidance=1.0).shape == (3, 1, 4, 4)


def test_sampling_with_contexts_one_or_one_per_sample():
    model = context_model(SEQ, features=2, seed=8)
    model.denoiser = Denoiser(2, width=8, depth=1, context=SEQ).double()
    y, mask = contexts(SEQ, (5,))
    g = torch.Generator().manual_seed(0)
    for denoise in (None, "tweedie", "learned"):
        assert model.sample(5, y, mask=mask, denoise=denoise, generator=g).shape == (5, 2)
        assert model.sample(5, y[0], mask=mask[0], denoise=denoise, generator=g).shape == (5, 2)
    one = model.sample(3, y[1], mask=mask[1], generator=torch.Generator().manual_seed(1))
    many = model.sample(3, y[1].expand(3, *SEQ), mask=mask[1].expand(3, 4),
                        generator=torch.Generator().manual_seed(1))
    assert torch.equal(one, many)


@pytest.mark.parametrize("context", [3, SEQ])
def test_velocity_loss_and_samplers_take_contexts(context):
    v = fm.Velocity(2, width=16, depth=1, embedding=8, context=context)
    perturb(v, 0.3, 0)
    y, mask = contexts(context, (64,))
    x = torch.randn(64, 2)
    calls = []
    hook = v.register_forward_pre_hook(lambda m, a, k: calls.append(k.get("null")),
                                       with_kwargs=True)
    loss = fm.velocity_loss(v, x, y, torch.Generator().manual_seed(0), label_dropout=0.5,
                            mask=mask)
    assert loss.shape == () and loss.requires_grad
    again = fm.velocity_loss(v, x, y, torch.Generator().manual_seed(0), label_dropout=0.5,
                             mask=mask)
    assert torch.equal(loss, again) and torch.equal(calls[0], calls[1])
    assert 0 < calls[0].sum() < 64
    hook.remove()
    extra = {} if mask is None else {"mask": mask[0]}
    for method in ("euler", "heun", "ancestral"):
        one = fm.sample(v, 5, steps=2, method=method, y=y[0], **extra,
                        generator=torch.Generator().manual_seed(1))
        many = fm.sample(v, 5, steps=2, method=method, y=y[0].expand(5, *y.shape[1:]),
                         **({} if mask is None else {"mask": mask[0].expand(5, 4)}),
                         generator=torch.Generator().manual_seed(1))
        assert one.shape == (5, 2) and torch.allclose(one, many, atol=1e-12)


def test_named_predictors_and_configs_of_earlier_versions():
    assert nd.NTM((2,)).config()["predictor"] == "mlp"
    assert nd.NTM((1, 4, 4)).config()["predictor"] == "unet"
    model = nd.NTM((2,), classes=3, label_dropout=0.2, train_steps=(2, 4),
                   predictor_options=dict(width=8, depth=1))
    old = model.config()  # as an earlier version wrote it
    old["predictor"], old["label_dropout"] = "auto", old.pop("condition_dropout")
    for key in ("context", "condition_transporter"):
        del old[key]
    rebuilt = nd.NTM.from_config(old)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config() == model.config() and rebuilt.condition_dropout == 0.2
    assert [s.steps for s in rebuilt.train_schedules] == [2, 4]
