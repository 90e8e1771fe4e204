"""``torch.compile`` captures the training loss and the trajectory log-likelihood in one graph.

``torch._dynamo.explain`` traces without compiling (fast on CPU). Dynamo switches torch's
default distribution validation off the first time it runs (a global change made by torch, not
ntmdist), so every test restores it, and one test turns validation on explicitly to check that
the value checks of ``ntmdist.validation`` do not break the graph either.
"""

import pytest
import torch
from _models import seeded
from torch.distributions import Distribution

import ntmdist as nd

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Reset Dynamo's caches and restore torch's default ``validate_args`` around each test."""
    previous = Distribution._validate_args
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
    Distribution.set_default_validate_args(previous)


def default_model(features: int = 3, steps: int = 4) -> nd.NTM:
    """The default vector NTM (spline transporter, MLP predictor, per-step spline bijector),
    with small widths."""
    with seeded(0):
        return nd.NTM(
            (features,), nd.Schedule(steps=steps, t_min=(0.0, 0.05)),
            predictor_options={"width": 32, "depth": 1, "embedding": 16},
            transporter_options={"hidden": (16, 16), "bins": 4},
        )


def assert_one_graph(explanation: object) -> None:
    reasons = [str(b.reason) for b in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert reasons == []
    assert explanation.graph_count == 1


def test_loss_has_no_graph_break():
    model = default_model()
    x0 = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    assert_one_graph(torch._dynamo.explain(model.loss)(x0))


def test_log_prob_has_no_graph_break():
    model = default_model()
    x0 = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    traj = model.schedule.sample(x0, 1, generator=torch.Generator().manual_seed(2))
    assert_one_graph(torch._dynamo.explain(model().log_prob)(traj))


def test_validated_log_prob_has_no_graph_break():
    model = default_model()
    dist = nd.TrajectoryDistribution(model.transporter, model.predictor,
                                     model.schedule.grid_like(x := torch.randn(8, 3)), (3,),
                                     step_flow=model.step_flow, validate_args=True)
    traj = model.schedule.sample(x, 1, generator=torch.Generator().manual_seed(2))
    assert_one_graph(torch._dynamo.explain(dist.log_prob)(traj))
    bad = traj.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):  # eager validation is unchanged
        dist.log_prob(bad)


def test_compiled_log_prob_matches_eager():
    model = default_model(steps=2)
    x0 = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    traj = model.schedule.sample(x0, 1, generator=torch.Generator().manual_seed(2))
    dist = model()
    compiled = torch.compile(dist.log_prob, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(traj), dist.log_prob(traj))
