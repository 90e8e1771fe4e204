"""Posterior inference with an NTM prior in Pyro: NUTS and SVI against importance sampling.

An NTM is trained on a 2D toy (two moons) and used as the prior of a linear-Gaussian inverse
problem, ``y = A x + noise``. Because the NTM trajectory has an exact, differentiable likelihood,
the posterior over the whole trajectory ``x_{t_0:t_T}`` can be sampled by NUTS, and fitted by SVI
with an autoguide. Both are compared with a reference posterior obtained by importance sampling
from the prior (exact as the number of prior draws grows), by energy distance on level 0.

    python examples/pyro_posterior.py            # about 3-4 minutes on 2 CPU cores
    python examples/pyro_posterior.py --steps 500 --samples 200   # a quick smoke run

Writes ``pyro_posterior.png`` (prior, reference, NUTS and SVI posteriors).
"""

import argparse
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pyro
import pyro.distributions as pdist
import torch
from pyro import poutine
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import AutoIAFNormal, init_to_median

import ntmdist as nd
import ntmdist.pyro
from ntmdist.data import toy
from ntmdist.metrics import energy_distance
from ntmdist.training import fit

A = torch.tensor([[1.0, 0.2], [0.0, 0.3]])  # y = A x + noise: x_1 well observed, x_2 weakly
NOISE = 0.2


def train_prior(steps: int, seed: int) -> nd.NTM:
    data = toy("two_moons").sample(20_000, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    ntm = nd.NTM((2,), nd.Schedule(steps=4, t_min=0.0),
                 transporter=nd.Transporter.default(2, hidden=(64, 64)),
                 predictor=nd.MLPPredictor(2, width=128, depth=2))
    ntm = fit(ntm, data, steps=steps, batch_size=256, lr=2e-3, seed=seed).apply_ema()
    return ntm.eval().requires_grad_(False)


def whole_trajectory(ntm: nd.NTM, y: torch.Tensor) -> None:
    """The trajectory as one site: one batched log_prob per NUTS gradient."""
    traj = pyro.sample("traj", ntm())
    pyro.sample("y", pdist.Normal(traj[..., 0, :] @ A.T, NOISE).to_event(1), obs=y)


def per_level(ntm: nd.NTM, y: torch.Tensor) -> None:
    """The same model, one site per level (x_4, ..., x_0)."""
    x0 = nd.pyro.sample_trajectory("x", ntm())
    pyro.sample("y", pdist.Normal(x0 @ A.T, NOISE).to_event(1), obs=y)


def reference(ntm: nd.NTM, y: torch.Tensor, draws: int, n: int) -> tuple[torch.Tensor, float]:
    """Importance sampling from the prior, resampled to ``n`` points; returns (x0, ESS)."""
    with torch.no_grad():
        x0 = ntm.sample(draws)
        logw = pdist.Normal(x0 @ A.T, NOISE).log_prob(y).sum(-1)
    w = torch.softmax(logw.double(), 0)
    ess = float(1 / (w**2).sum())
    return x0[torch.multinomial(w, n, replacement=True)], ess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="prior training steps")
    parser.add_argument("--samples", type=int, default=800, help="NUTS samples (warm-up: half)")
    parser.add_argument("--svi-steps", type=int, default=1500)
    parser.add_argument("--draws", type=int, default=400_000, help="prior draws for IS")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small batches)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="pyro_posterior.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(args.seed)

    begin = time.perf_counter()
    ntm = train_prior(args.steps, args.seed)
    print(f"prior: {args.steps} steps in {time.perf_counter() - begin:.0f} s")
    x_true = torch.tensor([-2.6, 0.6])
    y = A @ x_true + NOISE * torch.randn(2)

    timings, results = {}, {}
    begin = time.perf_counter()
    results["reference"], ess = reference(ntm, y, args.draws, 4000)
    timings["reference"] = time.perf_counter() - begin
    print(f"importance sampling: {args.draws} prior draws, effective sample size {ess:.0f}")

    begin = time.perf_counter()
    mcmc = MCMC(NUTS(whole_trajectory, init_strategy=init_to_median),
                num_samples=args.samples, warmup_steps=args.samples // 2)
    mcmc.run(ntm, y)
    results["NUTS"] = mcmc.get_samples()["traj"][:, 0]
    timings["NUTS"] = time.perf_counter() - begin
    traj = mcmc.get_samples()["traj"][-1]
    one = poutine.condition(whole_trajectory, {"traj": traj})
    many = poutine.condition(per_level, {f"x_{k}": traj[k] for k in range(len(traj))})
    print("log joint of the last NUTS draw: one site {:.5f}, one site per level {:.5f}".format(
        *(poutine.trace(m).get_trace(ntm, y).log_prob_sum().item() for m in (one, many))))

    begin = time.perf_counter()
    guide = AutoIAFNormal(whole_trajectory, hidden_dim=[64, 64], num_transforms=2)
    elbo = Trace_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=0)
    svi = SVI(whole_trajectory, guide, pyro.optim.ClippedAdam({"lr": 3e-3, "lrd": 0.999}), elbo)
    for step in range(args.svi_steps):
        loss = svi.step(ntm, y)
        if (step + 1) % 500 == 0:
            print(f"SVI step {step + 1}: -ELBO = {loss:.3f}")
    predictive = Predictive(whole_trajectory, guide=guide, num_samples=4000,
                            return_sites=["traj"])
    with torch.no_grad():
        results["SVI (IAF guide)"] = predictive(ntm, y)["traj"][:, 0]
    timings["SVI (IAF guide)"] = time.perf_counter() - begin

    ref = results["reference"]
    with torch.no_grad():
        prior = ntm.sample(4000)
        fresh, _ = reference(ntm, y, args.draws, 4000)
    floor, spread = energy_distance(fresh, ref), energy_distance(prior, ref)
    print(f"\nenergy distance to the reference posterior (level 0); another IS draw: "
          f"{floor:.5f}, the prior: {spread:.4f}")
    print(f"{'method':<18}{'time s':>8}{'mean':>18}{'std':>18}{'energy dist':>13}")
    for name, x in results.items():
        ed = energy_distance(x, ref) if name != "reference" else floor
        mean = ", ".join(f"{v:+.3f}" for v in x.mean(0).tolist())
        std = ", ".join(f"{v:.3f}" for v in x.std(0).tolist())
        print(f"{name:<18}{timings[name]:>8.1f}{mean:>18}{std:>18}{ed:>13.5f}")
    agreement = max(energy_distance(results[k], ref) for k in ("NUTS", "SVI (IAF guide)"))
    print(f"agreement (worst energy distance to the reference): {agreement:.5f}")

    fig, axes = plt.subplots(1, 4, figsize=(16, 4), sharex=True, sharey=True)
    panels = {"NTM prior": prior, **results}
    for ax, (name, x) in zip(axes, panels.items(), strict=True):
        ax.scatter(*prior[:2000].T, s=1, c="0.85")
        if name != "NTM prior":
            ax.scatter(*x[:2000].T, s=1, alpha=0.5)
        ax.plot(*x_true, "r+", ms=12, mew=2)
        ax.set_title(name)
    axes[0].set_xlim(-3.5, 3.5)
    axes[0].set_ylim(-2.5, 2.8)
    fig.suptitle(f"posterior of y = A x + N(0, {NOISE}^2 I) under an NTM prior")
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
