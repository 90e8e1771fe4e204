"""Shared test helpers: seeding, small NTMs with randomly perturbed parameters (so that no block
is the identity), the tiny NTM of the training tests, and a callback that interrupts a fit."""

from collections.abc import Iterator
from contextlib import contextmanager

import torch

import ntmdist as nd
from ntmdist.transforms import MaskedAutoregressive


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global CPU generator inside the block and restore it afterwards (what
    module constructors draw from)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def perturb(module: torch.nn.Module, scale: float, seed: int) -> None:
    """Add N(0, scale^2) noise to every floating parameter (seeded, no global RNG change)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def small_model(
    features: int = 2, steps: int = 2, t_min: float = 0.1, step_flow: bool = False,
    classes: int | None = None, scale: float = 0.3, seed: int = 0, sigma_min: float = 0.2,
    transporter: str = "spline",
) -> nd.NTM:
    """A small float64 NTM with perturbed transporter, predictor and (optional) step flow."""
    with seeded(seed):
        return _build(features, steps, t_min, step_flow, classes, scale, seed, sigma_min,
                      transporter)


def _build(features, steps, t_min, step_flow, classes, scale, seed, sigma_min, transporter):
    schedule = nd.Schedule(steps=steps, t_min=t_min)
    context = 8 if step_flow else 0
    predictor = nd.MLPPredictor(features, classes=classes, width=32, depth=1, embedding=16,
                                step_context=context, sigma_min=sigma_min)
    if transporter == "none":
        tr = None
    else:
        tr = nd.Transporter.default(features, univariate=transporter, hidden=(16, 16), bins=4)
    flow = MaskedAutoregressive(features, context, "spline", bins=4, hidden=(16,)) if step_flow \
        else None
    model = nd.NTM((features,), schedule, transporter=tr, predictor=predictor,
                   classes=classes, step_flow=flow).double()
    perturb(model, scale, seed)
    return model


def tiny(seed: int) -> nd.NTM:
    """The NTM of the training tests: Gaussian steps, a one-block MLP predictor, 2 levels."""
    with seeded(seed):
        predictor = nd.MLPPredictor(2, width=32, depth=1, sigma_min=0.2)
        return nd.NTM((2,), nd.Schedule(2, t_min=(0.05, 0.1)), transporter=None,
                      predictor=predictor)


def stop_at(step: int):
    """A fit callback that interrupts the run (``KeyboardInterrupt``) after step ``step``."""

    def stop(n: int, metrics: dict) -> None:
        if n == step:
            raise KeyboardInterrupt

    return stop
