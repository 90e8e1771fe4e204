"""Training an NTM by Pyro SVI with the forward guide, side by side with ``ntmdist.training.fit``.

The model writes the trajectory as one Pyro site per level (``nd.pyro.sample_trajectory``) with
the data observed at level 0; the guide is the forward noising chain (``nd.pyro.forward_guide``).
With ``t_min = 0`` the ELBO that ``Trace_ELBO`` estimates is ``-D * NTM.loss + H`` in
expectation (``H`` = ``nd.pyro.forward_entropy``, a constant), so SVI and ``fit`` minimise the
same objective with the same gradients in distribution. Both runs start from the same weights
and use AdamW with the same warm-up + cosine schedule, batch size and number of steps, without
EMA; they differ in their random draws and in gradient clipping (norm 1: ``fit`` clips the
global norm, Pyro's optimisers each parameter's own).

    python examples/pyro_train.py       # about 3-4 minutes on 2 CPU cores

Prints the training losses and held-out likelihood bounds of both, writes ``pyro_train.png``.
"""

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

import ntmdist as nd
import ntmdist.pyro
from ntmdist.data import toy
from ntmdist.metrics import energy_distance
from ntmdist.training import fit, lr_factor


def build(seed: int) -> nd.NTM:
    torch.manual_seed(seed)
    return nd.NTM((2,), nd.Schedule(steps=4, t_min=0.0),
                  transporter=nd.Transporter.default(2, hidden=(64, 64)),
                  predictor=nd.MLPPredictor(2, width=128, depth=2))


def train_svi(ntm: nd.NTM, data: torch.Tensor, steps: int, batch_size: int, lr: float,
              warmup: int, seed: int) -> list[float]:
    """Pyro SVI; returns the per-step NTM loss (``-ELBO / (B D) + H / D``, nats/dim)."""
    chain = nd.pyro.forward_guide("x", ntm.schedule)
    scale = 1.0 / (batch_size * ntm.features)  # -ELBO per example and dimension, like NTM.loss

    def model(x: torch.Tensor) -> None:
        pyro.module("ntm", ntm)
        with pyro.plate("data", len(x)), poutine.scale(scale=scale):
            nd.pyro.sample_trajectory("x", ntm(), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", len(x)), poutine.scale(scale=scale):
            chain(x)

    optim = pyro.optim.LambdaLR({
        "optimizer": torch.optim.AdamW, "optim_args": {"lr": lr, "weight_decay": 0.0},
        "lr_lambda": lambda n: lr_factor(n, steps, warmup),
    }, clip_args={"clip_norm": 1.0})  # Pyro clips each parameter's gradient on its own
    svi = SVI(model, guide, optim, Trace_ELBO())
    entropy = nd.pyro.forward_entropy(ntm.schedule, ntm.event_shape) / ntm.features
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        x = data[torch.randint(len(data), (batch_size,), generator=g)]
        losses.append(svi.step(x) + entropy)
        optim.step()
    return losses


def smooth(v: list[float], width: int = 50) -> torch.Tensor:
    v = torch.tensor(v)
    return torch.nn.functional.avg_pool1d(v[None, None], width, 1)[0, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", default="two_moons")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small batches)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="pyro_train.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(args.seed)
    data = toy(args.toy).sample(20_000, generator=torch.Generator().manual_seed(args.seed))
    test = toy(args.toy).sample(2_000, generator=torch.Generator().manual_seed(args.seed + 1))
    warmup = args.steps // 20

    models, losses, timings = {}, {}, {}
    begin = time.perf_counter()
    models["fit"] = build(args.seed)
    result = fit(models["fit"], data, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                 warmup=warmup, grad_clip=1.0, ema=None, seed=args.seed, progress=False)
    losses["fit"], timings["fit"] = result.history["loss"], time.perf_counter() - begin

    begin = time.perf_counter()
    models["Pyro SVI"] = build(args.seed)
    losses["Pyro SVI"] = train_svi(models["Pyro SVI"], data, args.steps, args.batch_size,
                                   args.lr, warmup, args.seed)
    timings["Pyro SVI"] = time.perf_counter() - begin
    pyro.clear_param_store()

    print(f"{args.toy}, {args.steps} steps of batch {args.batch_size}, nats per dimension "
          "(bounds on the held-out log-likelihood: higher is better)")
    print(f"{'trainer':<10}{'time s':>8}{'train loss':>12}{'test ELBO':>11}{'test IWAE-64':>14}"
          f"{'energy dist':>13}")
    samples = {}
    for name, ntm in models.items():
        with torch.no_grad():
            gen = torch.Generator().manual_seed(args.seed)
            elbo = ntm.elbo(test, particles=16, generator=gen).mean().item() / 2
            iwae = ntm.iwae(test, particles=64, generator=gen).mean().item() / 2
            samples[name] = ntm.sample(len(test), generator=gen)
        ed = energy_distance(samples[name], test)
        train = sum(losses[name][-100:]) / 100
        print(f"{name:<10}{timings[name]:>8.1f}{train:>12.4f}{elbo:>11.4f}{iwae:>14.4f}"
              f"{ed:>13.4f}")

    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for name, v in losses.items():
        axes[0].plot(smooth(v), label=name, lw=1)
    axes[0].set(xlabel="step", ylabel="NTM loss, nats/dim (moving average)",
                ylim=(min(smooth(v).min().item() for v in losses.values()) - 0.2, 6.0))
    axes[0].legend()
    panels = {"held-out data": test, **{f"samples, {k}": v for k, v in samples.items()}}
    for ax, (name, x) in zip(axes[1:], panels.items(), strict=True):
        ax.scatter(*x.T, s=1)
        ax.set_title(name)
        ax.set_xlim(-3.8, 3.8)
        ax.set_ylim(-2.5, 2.8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
