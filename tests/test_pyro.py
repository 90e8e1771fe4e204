"""Pyro composition: sites, plates, handlers, SVI with the forward guide, NUTS."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pyro
import pyro.distributions as pdist
import pytest
import torch
from _models import seeded, small_model
from pyro import poutine
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO

import ntmdist as nd
from ntmdist.pyro import forward_entropy, forward_guide, sample_trajectory

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_pyro():
    """Fresh param store and global RNG state per test, restored afterwards."""
    pyro.clear_param_store()
    with seeded(0):
        yield
    pyro.clear_param_store()


def levels(trace, name, steps):
    """The trajectory ``(*batch, T+1, *event)`` stacked from the sites ``name_0..name_T``."""
    return torch.stack([trace.nodes[f"{name}_{k}"]["value"] for k in range(steps + 1)], dim=-2)


@pytest.mark.parametrize("validate", [True, False])
@pytest.mark.parametrize("step_flow", [False, True])
def test_log_prob_sum_equals_log_prob(validate, step_flow):
    model = small_model(steps=3, step_flow=step_flow, seed=1)
    with pyro.validation_enabled(validate):
        dist = model()

        def whole():
            with pyro.plate("data", 5):
                return pyro.sample("traj", dist)

        def per_level():
            with pyro.plate("data", 5):
                return sample_trajectory("x", dist)

        trace = poutine.trace(whole).get_trace()
        traj = trace.nodes["traj"]["value"]
        assert traj.shape == (5, 4, 2)
        torch.testing.assert_close(trace.log_prob_sum(), dist.log_prob(traj).sum())

        trace = poutine.trace(per_level).get_trace()
        trace.compute_log_prob()
        traj = levels(trace, "x", 3)
        torch.testing.assert_close(trace.log_prob_sum(), dist.log_prob(traj).sum())
        per_site = torch.stack([trace.nodes[f"x_{k}"]["log_prob"] for k in (3, 0, 1, 2)], -1)
        torch.testing.assert_close(per_site, dist.log_prob_levels(traj))


@pytest.mark.parametrize("classes", [None, 3])
def test_plate_shapes(classes):
    model = small_model(steps=2, classes=classes, seed=2)
    y = None if classes is None else torch.tensor([0, 1, 2, 1])

    def prior():
        with pyro.plate("a", 3, dim=-2), pyro.plate("b", 4, dim=-1):
            return sample_trajectory("x", model(y))

    trace = poutine.trace(prior).get_trace()
    trace.compute_log_prob()
    for k in range(3):
        site = trace.nodes[f"x_{k}"]
        assert site["value"].shape == (3, 4, 2)
        assert site["fn"].batch_shape == (3, 4) and site["log_prob"].shape == (3, 4)
    traj = levels(trace, "x", 2)
    total = sum(trace.nodes[f"x_{k}"]["log_prob"] for k in range(3))
    torch.testing.assert_close(total, model(y).log_prob(traj))

    def whole():
        with pyro.plate("a", 3, dim=-2), pyro.plate("b", 4, dim=-1):
            return pyro.sample("traj", model(y))

    assert whole().shape == (3, 4, 3, 2)


def test_step_condition_in_plate():
    """A step conditioned on one ``x_t`` is broadcast by a plate like any Pyro distribution."""
    step = small_model(steps=2, seed=3)().steps[0]
    x_t = torch.randn(2)

    def model():
        with pyro.plate("data", 6):
            return pyro.sample("x", step.condition(x_t))

    trace = poutine.trace(model).get_trace()
    trace.compute_log_prob()
    x = trace.nodes["x"]["value"]
    assert x.shape == (6, 2)
    torch.testing.assert_close(trace.nodes["x"]["log_prob"],
                               step.condition(x_t.expand(6, 2)).log_prob(x))


def test_condition_and_obs_agree():
    model = small_model(steps=2, seed=4)
    data = torch.randn(5, 2)

    def prior(obs=None):
        with pyro.plate("data", 5):
            return sample_trajectory("x", model(), obs=obs)

    conditioned = poutine.trace(poutine.condition(prior, data={"x_0": data})).get_trace()
    assert torch.equal(conditioned.nodes["x_0"]["value"], data)
    assert conditioned.nodes["x_0"]["is_observed"]
    replayed = poutine.trace(poutine.replay(prior, trace=conditioned)).get_trace(data)
    torch.testing.assert_close(replayed.log_prob_sum(), conditioned.log_prob_sum())
    torch.testing.assert_close(conditioned.log_prob_sum(),
                               model().log_prob(levels(conditioned, "x", 2)).sum())


@pytest.mark.parametrize("parallel", [False, True])
def test_predictive(parallel):
    model = small_model(steps=2, seed=5)

    def prior(n):
        with pyro.plate("data", n):
            x = sample_trajectory("x", model())
            pyro.sample("y", pdist.Normal(x, 0.1).to_event(1))

    samples = Predictive(prior, num_samples=7, parallel=parallel)(4)
    for site in ("x_2", "x_1", "x_0", "y"):
        assert samples[site].shape == (7, 4, 2)
        assert torch.isfinite(samples[site]).all()


def test_validation_refuses_nan():
    model = small_model(steps=2, seed=6)
    bad = torch.randn(3, 3, 2)
    bad[1, 0, 0] = float("nan")

    def observed(dist):
        with pyro.plate("data", 3):
            pyro.sample("traj", dist, obs=bad)

    with pyro.validation_enabled(True):
        trace = poutine.trace(observed).get_trace(model())
        with pytest.raises(ValueError, match="NaN"):
            trace.log_prob_sum()
    with pyro.validation_enabled(False):
        trace = poutine.trace(observed).get_trace(model())
        assert torch.isnan(trace.log_prob_sum())


def test_bad_arguments():
    with pytest.raises(TypeError, match="TrajectoryDistribution"):
        sample_trajectory("x", pdist.Normal(0.0, 1.0))
    with pytest.raises(TypeError, match="non-empty string"):
        sample_trajectory("", small_model()())
    with pytest.raises(ValueError, match="event_dim"):
        forward_guide("x", nd.Schedule(), event_dim=0)
    with pytest.raises(TypeError, match="Schedule"):
        forward_guide("x", [0.0, 1.0])


def svi_parts(model):
    chain = forward_guide("x", model.schedule)

    def pmodel(x):
        pyro.module("ntm", model)
        with pyro.plate("data", len(x)):
            sample_trajectory("x", model(), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            chain(x)

    return pmodel, guide


def test_forward_guide_elbo_identity():
    """Pyro's ELBO with the forward guide is ``model.elbo`` and ``-D loss + H`` (t_min = 0)."""
    model = small_model(steps=3, t_min=0.0, seed=7)
    x = torch.randn(4, 2)
    pmodel, guide = svi_parts(model)
    # exact, draw by draw: replay the model on a guide trace
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(pmodel, trace=guide_trace)).get_trace(x)
    traj = levels(model_trace, "x", 3)
    expected = model().log_prob(traj) - model.schedule.log_prob_forward(traj, 1)
    torch.testing.assert_close(model_trace.log_prob_sum() - guide_trace.log_prob_sum(),
                               expected.sum())
    # in expectation, with many particles
    particles = 1000
    with torch.no_grad():
        traj = model.schedule.sample(x.expand(particles, 4, 2), 1, from_level0=True)
        lw = model().log_prob(traj) - model.schedule.log_prob_forward(traj, 1)
    tol = 6 * lw.sum(-1).std().item() / particles**0.5
    elbo = Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        pyro_elbo = -elbo.loss(pmodel, guide, x)
        ntm_elbo = model.elbo(x, particles=particles).sum().item()
        loss = model.loss(x.expand(particles, 4, 2).reshape(-1, 2)).item()
    bound = len(x) * (-model.features * loss + forward_entropy(model.schedule, (2,)))
    assert abs(pyro_elbo - ntm_elbo) < tol
    assert abs(pyro_elbo - bound) < tol


def test_svi_step_lowers_loss():
    model = small_model(steps=2, t_min=0.0, seed=8)
    x = torch.randn(64, 2)
    pmodel, guide = svi_parts(model)
    elbo = Trace_ELBO(num_particles=64, vectorize_particles=True, max_plate_nesting=1)
    svi = SVI(pmodel, guide, pyro.optim.Adam({"lr": 1e-2}), elbo)

    def evaluate():
        with seeded(123):
            return svi.evaluate_loss(x)

    before = evaluate()
    svi.step(x)
    assert set(pyro.get_param_store().keys()) == {
        f"ntm$$${n}" for n, _ in model.named_parameters()
    }
    assert evaluate() < before


@pytest.mark.parametrize("whole", [False, True])
def test_nuts_two_level(whole):
    model = small_model(features=1, steps=1, t_min=0.0, seed=9)

    def posterior():
        if whole:
            x0 = pyro.sample("traj", model())[..., 0, :]
        else:
            x0 = sample_trajectory("x", model())
        pyro.sample("y", pdist.Normal(x0, 0.5).to_event(1), obs=torch.ones(1))

    mcmc = MCMC(NUTS(posterior), num_samples=20, warmup_steps=20, disable_progbar=True)
    mcmc.run()
    samples = mcmc.get_samples()
    shapes = {"traj": (20, 2, 1)} if whole else {"x_1": (20, 1), "x_0": (20, 1)}
    assert {k: tuple(v.shape) for k, v in samples.items()} == shapes
    assert all(torch.isfinite(v).all() for v in samples.values())


IMPORT_CHECK = """
import torch
{first}
{second}
before = torch.distributions.Distribution._validate_args
import ntmdist as nd
from ntmdist.pyro import sample_trajectory
model = nd.NTM((2,), nd.Schedule(steps=2))

def check():
    def prior():
        with pyro.plate("data", 3):
            return sample_trajectory("x", model())
    trace = pyro.poutine.trace(prior).get_trace()
    traj = torch.stack([trace.nodes[f"x_{{k}}"]["value"] for k in range(3)], -2)
    torch.testing.assert_close(trace.log_prob_sum(), model().log_prob(traj).sum())

check()
assert torch.distributions.Distribution._validate_args is before
for validate in (True, False):
    with pyro.validation_enabled(validate):
        check()
"""


@pytest.mark.slow
@pytest.mark.parametrize("order", [("zuko", "pyro"), ("pyro", "zuko")])
def test_import_order(order):
    code = IMPORT_CHECK.format(first=f"import {order[0]}", second=f"import {order[1]}")
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
