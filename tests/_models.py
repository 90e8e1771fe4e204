"""Small NTMs with randomly perturbed parameters, so that no block is the identity."""

import torch

import ntmdist as nd
from ntmdist.transforms import MaskedAutoregressive


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
    with torch.random.fork_rng():
        torch.manual_seed(seed)
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
