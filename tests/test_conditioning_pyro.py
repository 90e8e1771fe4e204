"""A conditional NTM whose context is another latent of a Pyro model: ``pyro.sample``,
``plate``, SVI and NUTS, with exact joint densities and gradients with respect to the context
(float64, against autograd of the per-term densities and central differences)."""

import subprocess
import sys

import pyro
import pyro.distributions as pdist
import pytest
import torch
from _models import perturb
from _scripts import ROOT, subprocess_env
from pyro import poutine
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO

import ntmdist as nd
from ntmdist.pyro import forward_guide, sample_trajectory


@pytest.fixture(autouse=True)
def clean_pyro():
    """Fresh param store and global RNG state per test, restored afterwards."""
    pyro.clear_param_store()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield
    pyro.clear_param_store()


def likelihood(seed=0):
    """A small float64 NTM p(x | theta) for x, theta in R^2, perturbed (not the identity)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ntm = nd.NTM((2,), nd.Schedule(2, t_min=0.0), context=2,
                     predictor_options=dict(width=16, depth=1, embedding=8),
                     transporter_options=dict(hidden=(16, 16), bins=4),
                     step_flow_options=dict(hidden=[16], bins=4)).double()
    perturb(ntm, 0.2, seed)
    return ntm.requires_grad_(False)


def per_level(ntm, x):
    """theta ~ N(0, I); every observation x_i ~ the NTM given theta, its levels above 0 latent."""
    theta = pyro.sample("theta", pdist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with pyro.plate("data", len(x)):
        sample_trajectory("x", ntm(theta), obs=x)
    return theta


def one_factor(ntm, x):
    """The same joint density with the latent levels as one flat site and one NTM factor (one
    batched log_prob per evaluation)."""
    theta = pyro.sample("theta", pdist.Normal(0.0, 1.0).expand([2]).to_event(1))
    T = ntm.schedule.steps
    flat = pdist.Normal(0.0, 1.0).expand([len(x), T, 2]).to_event(3).mask(False)
    levels = pyro.sample("levels", flat)
    pyro.factor("ntm", ntm(theta).log_prob(torch.cat([x[:, None], levels], 1)).sum())
    return theta


def joint(ntm, x, theta, levels):
    """log p(theta) + sum_i log p_NTM(x_i, levels_i | theta), computed directly."""
    prior = pdist.Normal(0.0, 1.0).log_prob(theta).sum(-1)
    return prior + ntm(theta).log_prob(torch.cat([x[:, None], levels], 1)).sum()


def test_joint_density_of_the_pyro_model_is_exact_and_its_context_gradient_too():
    ntm = likelihood()
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(1))
    theta = torch.tensor([0.3, -0.7], requires_grad=True)
    levels = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(2))
    values = {"theta": theta, "x_2": levels[:, 1], "x_1": levels[:, 0]}

    def log_joint(model, theta, **sites):
        conditioned = poutine.condition(model, {"theta": theta, **sites})
        return poutine.trace(conditioned).get_trace(ntm, x).log_prob_sum()

    expected = joint(ntm, x, theta, levels)
    lp = log_joint(per_level, theta, **{k: v for k, v in values.items() if k != "theta"})
    assert torch.allclose(lp, expected, atol=1e-10)
    factor = log_joint(one_factor, theta, levels=levels)
    assert torch.allclose(factor, expected, atol=1e-10)
    (grad,) = torch.autograd.grad(lp, theta)
    eps, fd = 1e-6, torch.zeros(2)
    with torch.no_grad():
        for i in range(2):
            e = torch.zeros(2)
            e[i] = eps
            up = log_joint(per_level, theta + e, x_2=levels[:, 1], x_1=levels[:, 0])
            down = log_joint(per_level, theta - e, x_2=levels[:, 1], x_1=levels[:, 0])
            fd[i] = (up - down) / (2 * eps)
    assert grad.abs().max() > 1e-2 and torch.allclose(grad, fd, atol=1e-6, rtol=1e-6)


def test_plate_broadcasts_one_context_over_the_observations():
    ntm = likelihood()
    trace = poutine.trace(per_level).get_trace(ntm, torch.zeros(4, 2))
    assert trace.nodes["theta"]["value"].shape == (2,)
    assert trace.nodes["x_2"]["value"].shape == (4, 2)
    assert trace.nodes["x_0"]["fn"].batch_shape == (4,)


@pytest.mark.parametrize("model", [per_level, one_factor])
def test_nuts_samples_the_context_and_the_latent_levels(model):
    ntm = likelihood()
    x = torch.randn(2, 2, generator=torch.Generator().manual_seed(3))
    # a shallow tree keeps the test short: 10 + 10 iterations of at most 15 leapfrog steps
    mcmc = MCMC(NUTS(model, max_tree_depth=4), num_samples=10, warmup_steps=10,
                disable_progbar=True)
    mcmc.run(ntm, x)
    samples = mcmc.get_samples()
    assert samples["theta"].shape == (10, 2) and torch.isfinite(samples["theta"]).all()
    assert samples["theta"].std(0).min() > 0  # it moved
    levels = samples["x_1"] if model is per_level else samples["levels"]
    assert torch.isfinite(levels).all()


def test_svi_fits_a_guide_for_the_context_with_the_forward_chain_for_the_levels():
    """Guide: a Gaussian for theta, the forward chain q(x_{t_1:t_T} | x_0) for the levels; the
    ELBO's gradient reaches theta's guide parameters through the NTM's conditioning."""
    ntm = likelihood()
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(4))
    chain = forward_guide("x", ntm.schedule)

    def guide(ntm, x):
        loc = pyro.param("loc", torch.zeros(2))
        scale = pyro.param("scale", torch.ones(2), constraint=pdist.constraints.positive)
        pyro.sample("theta", pdist.Normal(loc, scale).to_event(1))
        with pyro.plate("data", len(x)):
            chain(x)

    svi = SVI(per_level, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO(num_particles=8,
                                                                          vectorize_particles=False))
    losses = [svi.step(ntm, x) for _ in range(30)]
    assert all(torch.isfinite(torch.tensor(losses)))
    loc = pyro.param("loc").detach()
    assert loc.abs().max() > 0.05  # the guide moved, driven by the likelihood's context gradient


@pytest.mark.slow
def test_pyro_likelihood_example_runs_quick(tmp_path):
    out = tmp_path / "nle.png"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pyro_likelihood.py"), "--quick", "--out",
         str(out)], capture_output=True, text=True, timeout=600, env=subprocess_env(),
        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert out.exists() and "energy distance" in result.stdout
