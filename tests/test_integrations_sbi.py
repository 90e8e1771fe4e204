"""``ntmdist.integrations.sbi``: an NTM as the density estimator of sbi's NPE.

sbi is an optional extra (``pip install 'ntmdist[sbi]'``), not a dependency of ntmdist or of
its dev tools, so the tests that drive it are skipped where it is not installed; the error that
names the extra is tested everywhere."""

import importlib
import math
import sys

import pytest
import torch

import ntmdist as nd

SMALL = {"predictor_options": {"width": 16, "depth": 1},
         "transporter_options": {"hidden": (16,)}, "step_flow_options": {"hidden": (16,)}}


@pytest.fixture
def sbi_module():
    torch.set_default_dtype(torch.float32)  # sbi refuses float64 simulations (fixture restores)
    pytest.importorskip("sbi", reason="sbi is an optional extra (pip install 'ntmdist[sbi]')")
    return importlib.import_module("ntmdist.integrations.sbi")


def estimator(module, context=3, std=(1.0, 2.0), **options):
    torch.manual_seed(0)
    model = nd.NTM((2,), context=context, **{**SMALL, **options})
    return module.NTMEstimator(model, (context,), theta_mean=torch.tensor([0.5, -1.0]),
                               theta_std=torch.tensor(std), x_mean=0.25, x_std=3.0,
                               particles=4)


def test_missing_sbi_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m == "sbi" or m.startswith("sbi.")] + ["sbi"]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: import fails
    monkeypatch.delitem(sys.modules, "ntmdist.integrations.sbi", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'ntmdist\[sbi\]'"):
        importlib.import_module("ntmdist.integrations.sbi")


def test_loss_is_the_ntm_objective_per_example(sbi_module):
    """The mean of the per-example losses is D times ``NTM.loss`` on the standardised scale
    (same draws) plus the log-Jacobian of the standardisation."""
    est = estimator(sbi_module)
    theta, x = torch.randn(8, 2), torch.randn(8, 3)
    torch.manual_seed(1)
    per_example = est.loss(theta, x)
    torch.manual_seed(1)
    z, c = (theta - est.theta_mean) / est.theta_std, (x - 0.25) / 3.0
    mean = est.net.loss(z, c)
    assert per_example.shape == (8,)
    expected = 2 * mean + math.log(2.0)
    assert torch.allclose(per_example.mean(), expected, rtol=1e-5, atol=1e-5)


def test_log_prob_is_the_bound_in_theta_units(sbi_module):
    """Doubling theta's scale (and its standardisation) shifts the log-density by -D log 2:
    the change of variables; shapes follow sbi's (sample, batch) convention."""
    narrow, wide = estimator(sbi_module), estimator(sbi_module, std=(2.0, 4.0))
    wide.theta_mean.mul_(2)
    theta, x = torch.randn(5, 3, 2), torch.randn(3, 3)
    torch.manual_seed(2)
    a = narrow.log_prob(theta, x)
    torch.manual_seed(2)
    b = wide.log_prob(2 * theta, x)
    assert a.shape == b.shape == (5, 3)
    assert torch.allclose(b, a - 2 * math.log(2.0), atol=1e-4)
    assert narrow.log_prob(theta[0], x).shape == (1, 3)


def test_sample_keeps_each_condition_with_its_draws(sbi_module, monkeypatch):
    """``sample(shape, x)`` is ``(*shape, B, D)`` and entry ``[..., j, :]`` was drawn given
    ``x[j]``: a stand-in sampler returns its (standardised) condition."""
    est = estimator(sbi_module, context=2)
    monkeypatch.setattr(est.net, "sample", lambda n, y: y.clone())
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    out = est.sample((4, 2), x)
    assert out.shape == (4, 2, 3, 2)
    expected = (x - 0.25) / 3.0 * est.theta_std + est.theta_mean
    assert torch.equal(out, expected.expand(4, 2, 3, 2))
    real = estimator(sbi_module, context=2).sample((6,), x)
    assert real.shape == (6, 3, 2) and torch.isfinite(real).all()


def test_refuses_models_sbi_cannot_train(sbi_module):
    with pytest.raises(ValueError, match="context"):
        sbi_module.NTMEstimator(nd.NTM((2,), classes=3, **SMALL), ())
    with pytest.raises(ValueError, match="train_particles=1"):
        sbi_module.NTMEstimator(nd.NTM((2,), context=3, train_particles=2, **SMALL), (3,))
    with pytest.raises(TypeError, match="ntmdist.NTM"):
        sbi_module.NTMEstimator(torch.nn.Linear(2, 2), (2,))
    est = estimator(sbi_module)
    with pytest.raises(ValueError, match="condition"):
        est.log_prob(torch.randn(4, 2), torch.randn(4, 5))


@pytest.mark.filterwarnings("ignore:Maximum number of epochs")  # 3 epochs: a tiny run
def test_npe_trains_and_samples_through_sbi(sbi_module, tmp_path, monkeypatch):
    """sbi builds the estimator from the simulations, trains it with its own loop (validation
    split, early stopping), and its posterior samples and evaluates the bound."""
    monkeypatch.chdir(tmp_path)  # sbi's default summary writer logs to ./sbi-logs
    from sbi.inference import NPE
    from sbi.utils import BoxUniform

    torch.manual_seed(0)
    prior = BoxUniform(-torch.ones(2), torch.ones(2))
    theta = prior.sample((300,))
    x = torch.cat([theta, theta.prod(-1, keepdim=True)], -1) + 0.1 * torch.randn(300, 3)
    build = sbi_module.posterior_ntm(particles=8, **SMALL)
    npe = NPE(prior, density_estimator=build, show_progress_bars=False)
    est = npe.append_simulations(theta, x).train(max_num_epochs=3, training_batch_size=50)
    assert isinstance(est, sbi_module.NTMEstimator) and est.net.context == 3
    assert torch.allclose(est.theta_mean, theta[npe.train_indices].mean(0))
    posterior = npe.build_posterior()
    samples = posterior.sample((40,), x=x[0], show_progress_bars=False)
    assert samples.shape == (40, 2) and (samples.abs() <= 1).all()  # rejected outside the prior
    log_prob = posterior.log_prob(samples, x=x[0])
    assert log_prob.shape == (40,) and torch.isfinite(log_prob).all()
