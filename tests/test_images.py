"""Image models: patches, the TarFlow transporter over patches, the U-Net predictor, the default
image NTM (exactness in float64), classifier-free guidance and label dropout."""

import math

import pytest
import torch
from _models import perturb, seeded
from hypothesis import given
from hypothesis import strategies as st

import ntmdist as nd
from ntmdist import flow_matching as fm
from ntmdist.guidance import combine
from ntmdist.predictor import ImagePredictor
from ntmdist.transforms import PatchCausalAffine, patchify, unpatchify


def small_image_model(classes=3, seed=0, scale=0.05, shape=(1, 4, 4), steps=3, t_min=0.05):
    """A float64 image NTM with every default network, small, and perturbed away from zero."""
    with seeded(seed):
        model = nd.NTM(shape, nd.Schedule(steps, t_min), classes=classes,
                       transporter_options=dict(width=16, depth=1, heads=2, embedding=8),
                       predictor_options=dict(width=8, embedding=8)).double()
    perturb(model, scale, seed)
    return model


def jacobian(fn, x):
    """``(N, D, D)`` Jacobians of ``fn`` at images ``x`` ``(N, *event)``, by autograd."""
    n, d = x.shape[0], x[0].numel()
    jac = torch.autograd.functional.jacobian(lambda v: fn(v).reshape(n, d).sum(0), x)
    return jac.reshape(d, n, d).movedim(1, 0)


# -- patches ------------------------------------------------------------------------------------


@given(c=st.integers(1, 3), ph=st.integers(1, 3), pw=st.integers(1, 3), p=st.integers(1, 3),
       batch=st.sampled_from([(), (2,), (2, 3)]))
def test_patchify_is_a_permutation_in_raster_order(c, ph, pw, p, batch):
    shape = (c, ph * p, pw * p)
    x = torch.arange(math.prod(batch) * math.prod(shape), dtype=torch.float64)
    x = x.reshape(*batch, *shape)
    tokens = patchify(x, p)
    assert tokens.shape == (*batch, ph * pw, c * p * p)
    assert torch.equal(unpatchify(tokens, shape, p), x)
    assert torch.equal(tokens.flatten().sort().values, x.flatten())  # nothing lost or repeated
    i, j = ph - 1, pw - 1  # the last patch in raster order holds the bottom-right pixels
    assert torch.equal(tokens[..., -1, :], x[..., i * p:, j * p:].flatten(-3))


def test_patch_block_is_causal_over_patches():
    """Output patch k depends on input patches before k (reading order) and on itself only."""
    for reverse in (False, True):
        with seeded(1):
            block = PatchCausalAffine((2, 4, 4), patch=2, context=3, width=8, depth=1,
                                      reverse=reverse).double()
        perturb(block, 0.3, 1)
        f = block(torch.randn(3, dtype=torch.float64))
        x = torch.randn(2, 2, 4, 4, dtype=torch.float64)
        jac = jacobian(f, x)  # (2, 32, 32)
        idx = patchify(torch.arange(32.0).reshape(1, 2, 4, 4), 2)[0].long()  # (4 patches, 8)
        order = torch.arange(4) if not reverse else torch.arange(4).flip(0)
        for a in range(4):
            for b in range(4):
                block_ab = jac[:, idx[order[a]]][:, :, idx[order[b]]]
                if b > a:
                    assert torch.all(block_ab == 0)
                elif b == a:  # element-wise affine within a patch: diagonal, positive
                    assert torch.all(block_ab - torch.diag_embed(block_ab.diagonal(0, 1, 2)) == 0)
                    assert torch.all(block_ab.diagonal(0, 1, 2) > 0)


def test_patch_block_errors():
    with pytest.raises(ValueError, match="patch .* must divide"):
        PatchCausalAffine((1, 6, 6), patch=4)
    with pytest.raises(ValueError, match=r"image_shape must be \(C, H, W\)"):
        PatchCausalAffine((6, 6), patch=2)
    f = PatchCausalAffine((1, 4, 4), patch=2, width=8, depth=1)()
    with pytest.raises(ValueError, match=r"expected images of shape \(\*, 1, 4, 4\)"):
        f(torch.randn(2, 1, 4, 6))


# -- the default image NTM ------------------------------------------------------------------------


def test_default_image_networks_are_picked():
    model = nd.NTM((1, 8, 8), classes=10)
    assert isinstance(model.predictor, ImagePredictor)
    blocks = model.transporter.blocks
    assert len(blocks) == 2 and all(isinstance(b, PatchCausalAffine) for b in blocks)
    assert [b.tokens.reverse for b in blocks] == [False, True]  # alternating raster order
    assert blocks[0].patch == 2 and blocks[0].tokens.tokens == 16
    assert model.label_dropout == 0.1 and nd.NTM((1, 8, 8)).label_dropout == 0.0


def test_image_transporter_ladj_is_the_autograd_log_determinant():
    model = small_image_model(seed=3)
    t = torch.tensor([0.05, 0.4, 0.7])
    x = torch.randn(3, 1, 4, 4)
    f = model.transporter(t)
    u, ladj = f.call_and_ladj(x)
    assert not torch.allclose(u, x)  # perturbed: not the identity
    logdet = torch.linalg.slogdet(jacobian(f, x))[1]
    assert torch.allclose(ladj, logdet, atol=1e-10)
    back, ladj_back = f.inverse_and_ladj(u)
    assert torch.allclose(back, x, atol=1e-10) and torch.allclose(ladj_back, ladj, atol=1e-10)
    top = model.transporter(torch.ones(3))  # identity at t = 1
    assert torch.equal(top(x), x)


def test_image_log_prob_is_prior_plus_conditioned_steps():
    model = small_image_model(seed=4)
    dist = model(torch.tensor([0, 1, 2, 3]))  # 3: the null label
    x0 = torch.randn(4, 1, 4, 4)
    traj = model.schedule.sample(x0, 3, torch.Generator().manual_seed(0))
    assert dist.event_shape == (4, 1, 4, 4)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(traj[:, -1]).sum((-3, -2, -1))
    for k in range(1, 4):
        step = dist.steps[k - 1].condition(traj[:, k])
        expected = expected + step.log_prob(traj[:, k - 1])
    assert torch.allclose(dist.log_prob(traj), expected, atol=1e-9)
    rs, lp = dist.rsample_and_log_prob(generator=torch.Generator().manual_seed(1))
    assert rs.shape == (4, 4, 1, 4, 4) and torch.allclose(lp, dist.log_prob(rs), atol=1e-8)


def test_image_model_round_trips_its_config():
    model = small_image_model(seed=5)
    clone = nd.NTM.from_config(model.config()).double()
    clone.load_state_dict(model.state_dict())
    traj = model.schedule.sample(torch.randn(2, 1, 4, 4), 3, torch.Generator().manual_seed(0))
    y = torch.tensor([1, 2])
    assert torch.equal(model(y).log_prob(traj), clone(y).log_prob(traj))


def test_image_model_samples_bounds_and_guidance():
    model = small_image_model(seed=6)
    g = torch.Generator().manual_seed(0)
    assert model.sample(5, generator=g).shape == (5, 1, 4, 4)
    guided = model.sample(5, y=torch.tensor([0, 1, 2, 0, 1]), guidance=2.0, generator=g)
    assert guided.shape == (5, 1, 4, 4) and torch.isfinite(guided).all()
    x = torch.randn(3, 1, 4, 4)
    elbo, iwae = model.elbo(x, particles=16, generator=g), model.iwae(x, particles=16, generator=g)
    assert elbo.shape == iwae.shape == (3,) and torch.isfinite(iwae).all()


def test_unsupported_event_shapes_are_refused():
    with pytest.raises(ValueError, match=r"vectors \(D,\) and images \(C, H, W\)"):
        nd.NTM((3, 4))
    assert nd.NTM((1, 4, 4), step_flow="auto").step_flow is None  # "auto" for images: none
    assert nd.NTM((3, 4), transporter=None, predictor=nd.MLPPredictor(12)) is not None


def test_image_velocity_default_backbone_and_flow_matching_init():
    with seeded(0):
        v = fm.Velocity((1, 4, 4), classes=2).double()
    perturb(v, 0.05, 0)
    x, t = torch.randn(3, 1, 4, 4), torch.rand(3)
    assert v(x, t, torch.tensor([0, 1, 2])).shape == (3, 1, 4, 4)
    model = nd.NTM.from_flow_matching(v, nd.Schedule(3, 0.05))
    assert isinstance(model.transporter.blocks[0], PatchCausalAffine)
    step = model(torch.tensor([1, 0, 2])).steps[1].condition(x)  # s = t_1, t = t_2
    s_, t_ = model.schedule.grid[1], model.schedule.grid[2]
    a, b, c = nd.schedule.posterior_coefficients(s_, t_)
    mean = a * x + b * (x - t_ * v(x, t_.expand(3), torch.tensor([1, 0, 2])))
    assert torch.allclose(step.base_dist.base_dist.loc, mean, atol=1e-10)
    assert torch.allclose(step.base_dist.base_dist.scale, c.expand(3, 1, 4, 4), atol=1e-10)


# -- classifier-free guidance ---------------------------------------------------------------------


@given(mu_c=st.floats(-3, 3), mu_u=st.floats(-3, 3), log_sc=st.floats(-1.5, 0.5),
       ratio=st.floats(1.0, 3.0), w=st.floats(0.0, 4.0))
def test_guidance_is_the_normalised_product(mu_c, mu_u, log_sc, ratio, w):
    r"""For :math:`\sigma_c \leq \sigma_u`, ``combine`` is :math:`p_c^{1+w} / p_u^w`,
    normalised: mean, variance and density checked by quadrature on a fine grid."""
    sc, su = math.exp(log_sc), math.exp(log_sc) * ratio
    mu, ls = combine(*(torch.tensor([v], dtype=torch.float64)
                       for v in (mu_c, log_sc, mu_u, math.log(su))), w)
    x = torch.linspace(-30, 30, 120_001, dtype=torch.float64)
    normal = torch.distributions.Normal
    log_q = (1 + w) * normal(mu_c, sc).log_prob(x) - w * normal(mu_u, su).log_prob(x)
    dx = x[1] - x[0]
    log_q = log_q - torch.logsumexp(log_q, 0) - dx.log()  # normalised numerically
    q = log_q.exp()
    mean = torch.trapezoid(q * x, dx=dx)
    var = torch.trapezoid(q * (x - mean) ** 2, dx=dx)
    assert abs(mean - mu.item()) < 1e-6 * (1 + abs(mean))
    assert abs(var - math.exp(2 * ls.item())) < 1e-6 * var
    near = (x - mean).abs() < 4 * var.sqrt()
    assert torch.allclose(normal(mu, ls.exp()).log_prob(x[near]), log_q[near], atol=1e-6)


@given(mu_c=st.floats(-3, 3), mu_u=st.floats(-3, 3), log_sc=st.floats(-1.5, 0.5),
       ratio=st.floats(1.0, 3.0), w=st.floats(0.0, 4.0))
def test_guidance_clip_keeps_the_conditional_scale(mu_c, mu_u, log_sc, ratio, w):
    """For :math:`\\sigma_c > \\sigma_u` the clip ``r = 1`` keeps :math:`\\sigma_c` and moves the
    mean linearly away from :math:`\\mu_u` (the product would not be normalisable for large w)."""
    mu, ls = combine(*(torch.tensor([v], dtype=torch.float64)
                       for v in (mu_c, log_sc, mu_u, log_sc - math.log(ratio))), w)
    assert torch.allclose(ls, torch.tensor([log_sc]), atol=1e-12)
    assert torch.allclose(mu, torch.tensor([(1 + w) * mu_c - w * mu_u]), atol=1e-12)


def test_guided_step_combines_the_conditional_and_null_predictions():
    model = small_image_model(seed=7)
    x_t = torch.randn(4, 1, 4, 4)
    y = torch.tensor([0, 1, 2, 1])
    step = model(y, guidance=1.5).steps[2].condition(x_t)
    s, t = model.schedule.grid[2], model.schedule.grid[3]
    u_t = model.transporter(t.expand(4))(x_t)
    cond = model.predictor(u_t, t.expand(4), s.expand(4), y)
    null = model.predictor(u_t, t.expand(4), s.expand(4), torch.full((4,), 3))
    mu, ls = combine(*cond, *null, 1.5)
    base = step.base_dist.base_dist
    assert torch.allclose(base.loc, mu, atol=1e-12)
    assert torch.allclose(base.scale.log(), ls, atol=1e-12)


def test_label_dropout_replaces_labels_only_in_training():
    model = nd.NTM((2,), nd.Schedule(2, 0.05), classes=4, label_dropout=0.3,
                   predictor_options=dict(width=16, depth=1))
    seen = []
    model.predictor.register_forward_pre_hook(lambda m, args: seen.append(args[3].clone()))
    x = torch.randn(4000, 2)
    y = torch.randint(4, (4000,), generator=torch.Generator().manual_seed(1))
    model.train()
    model.loss(x, y, generator=torch.Generator().manual_seed(0))
    labels = seen[-1].reshape(4000, 2).T  # predictor batch: (example, step)
    dropped = (labels == 4).double()
    assert torch.equal(dropped[0], dropped[1])  # every step of an example agrees
    frac, se = dropped[0].mean().item(), math.sqrt(0.3 * 0.7 / 4000)
    assert abs(frac - 0.3) < 5 * se
    kept = dropped[0] == 0
    assert torch.equal(labels[0][kept], y[kept])
    model.eval()
    model.loss(x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(seen[-1].reshape(4000, 2)[:, 0], y)
    with pytest.raises(ValueError, match=r"label_dropout must be in \[0, 1\)"):
        nd.NTM((2,), classes=2, label_dropout=1.0)


def test_sample_labels_one_or_one_per_sample():
    model = nd.NTM((2,), nd.Schedule(2, 0.05), classes=4,
                   predictor_options=dict(width=16, depth=1))
    seen = []
    model.predictor.register_forward_pre_hook(lambda m, args: seen.append(args[3].clone()))
    model.sample(5, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(seen[-1].unique(), torch.tensor([3]))
    y = torch.tensor([0, 1, 2, 3, 0])
    model.sample(5, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(seen[-1].reshape(5, -1)[:, 0], y)  # (example, step), as in training
    for bad in (torch.tensor([0, 1]), torch.zeros(5, 1, dtype=torch.long)):
        with pytest.raises(ValueError, match="one label or 5 labels"):
            model.sample(5, bad)
