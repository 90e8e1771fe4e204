"""2D toy benchmark: NTM T=4 vs Gaussian T=4 vs flow matching vs zuko NSF.

Every model sees the same data stream, optimiser steps, batch size and learning-rate schedule
(``ntmdist.train.fit``: AdamW, warm-up, cosine decay, EMA; peak lr 2e-3 for every model), side
by side in one process. The NTMs use ``Schedule(4, t_min=(0, 0.05), shift=1)``. "NTM T=4" is the
library default for vectors (spline transporter, MLP predictor, per-step spline bijector
conditioned on the predictor); "paper" is the paper's configuration (no per-step bijector);
"Gaussian" has the identity transporter and Gaussian steps.

Metrics, on held-out data and 10k samples per model:
- NLL in nats (per example, 2 dims): NTM models by the IWAE bound with many particles (an upper
  bound on the exact NLL); zuko NSF exactly; flow matching has none here (ODE likelihood omitted).
- on support: fraction of samples on the checkerboard's black squares.
- energy: energy distance to held-out data (unbiased; ~0 means indistinguishable).
- sample s/10k: wall-clock seconds to draw 10k samples; train s: wall-clock training time.

Issue-5 rows (``--fm-init``, on in the full run): "NTM T=4 from FM + N" is
``NTM.from_flow_matching`` on the trained flow-matching velocity, fine-tuned ``N = --fm-steps``
steps (default: as many as the others, as in ``benchmarks/digits.py``) with the mean-alignment
loss (``aux_weight=2.5``; the velocity held for the first ``N // 10`` steps), against the default
NTM trained from scratch for the same ``N`` steps (the "NTM T=4" row, or "NTM T=4 scratch N" when
``N`` differs; until this protocol ``N`` was a third of the steps).
"NTM T=4 tweedie" and "NTM T=4 learned" are the first NTM sampled with ``denoise="tweedie"`` (one
backward pass) and ``denoise="learned"`` (a ``Denoiser`` trained ``--denoiser-steps`` steps, by
default as many as the NTM, by ``ntmdist.distill.fit_denoiser``; its train s is that training);
their NLL column is the NTM's.
``--train-particles K`` adds "NTM T=4, K traj/example": the default NTM (the same initial
weights and data stream as "NTM T=4") trained on the importance-weighted bound of level 0 with K
forward trajectories per example (``NTM(train_particles=K)``; the same steps and batch, K times
the compute per step), trained last so that every other row is unchanged.

Usage::

    python benchmarks/toy2d.py                  # full: 3000 steps, batch 512, all toys
    python benchmarks/toy2d.py --quick          # 300 steps, checkerboard only (a smoke run)
    python benchmarks/toy2d.py --toys checkerboard --steps 3000
    python benchmarks/toy2d.py --no-fm-init     # without the issue-5 rows
    python benchmarks/toy2d.py --no-paper       # without the paper-configuration row
    python benchmarks/toy2d.py --toys checkerboard --train-particles 4  # + the IWAE-trained NTM
    python benchmarks/toy2d.py --print benchmarks/results/toy2d_*.json  # re-print saved tables

Writes ``benchmarks/results/toy2d.json`` and prints one table per toy with ratios.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import zuko
from _results import read_results, write_results

import ntmdist as nd
from ntmdist.data import TOYS, toy
from ntmdist.distill import Denoiser, fit_denoiser
from ntmdist.flow_matching import Velocity, velocity_loss
from ntmdist.flow_matching import sample as fm_sample
from ntmdist.metrics import energy_distance, fraction_on_support
from ntmdist.train import fit

HERE = Path(__file__).resolve().parent


def ntm_models(schedule: nd.Schedule, paper: bool = True) -> dict[str, torch.nn.Module]:
    """The NTM variants compared (built under a fixed seed by the caller)."""
    models = {"NTM T=4": nd.NTM((2,), schedule)}
    if paper:
        models["NTM T=4, paper (no step flow)"] = nd.NTM((2,), schedule, step_flow=None)
    models["Gaussian T=4"] = nd.NTM((2,), schedule, transporter=None)
    return models


def nsf_loss(flow: torch.nn.Module, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    return -flow().log_prob(x).mean() / x.shape[-1]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def nll_of(model: nd.NTM, held: torch.Tensor, args: argparse.Namespace,
           g: torch.Generator, chunk: int = 250, schedule: nd.Schedule | None = None) -> float:
    """Mean IWAE NLL bound (nats per example) on the first ``nll_points`` held-out points,
    ``chunk`` points at a time (on ``schedule``'s grid, by default the model's)."""
    with torch.no_grad():
        return torch.cat([-model.iwae(c, particles=args.particles, generator=g,
                                      schedule=schedule)
                          for c in held[: args.nll_points].split(chunk)]).mean().item()


def trained_row(label: str, model: nd.NTM, draw, held: torch.Tensor, opts: dict,
                args: argparse.Namespace, g: torch.Generator, **fit_options) -> dict:
    """Train an NTM (``fit`` with ``opts`` and ``fit_options``), then draw 10k samples of its EMA
    model and bound its NLL with ``g``; the row holds the EMA model under ``"ema_model"``."""
    result, train_s = timed(fit, model, draw, **fit_options, **opts)
    m = result.ema_model
    with torch.no_grad():
        samples, sample_s = timed(m.sample, 10_000, generator=g)
    return dict(model=label, nll=nll_of(m, held, args, g), samples=samples, train_s=train_s,
                sample_s=sample_s, ema_model=m)


def issue5_rows(velocity: torch.nn.Module, ntm: nd.NTM, draw, held: torch.Tensor,
                schedule: nd.Schedule, opts: dict, args: argparse.Namespace,
                g: torch.Generator) -> list[dict]:
    """FM-initialised fine-tuning vs scratch for N steps; tweedie and learned sampling."""
    n = args.steps if args.fm_steps is None else args.fm_steps
    short = dict(opts, steps=n)
    rows = []
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        models = {f"NTM T=4 from FM + {n}": nd.NTM.from_flow_matching(velocity, schedule)}
        if n != args.steps:  # otherwise the "NTM T=4" row is the NTM trained from scratch
            models[f"NTM T=4 scratch {n}"] = nd.NTM((2,), schedule)
    for label, model in models.items():
        fine = dict(aux_weight=2.5, hold={"predictor.velocity": n // 10})
        rows.append(trained_row(label, model, draw, held, short, args, g,
                                **(fine if "from FM" in label else {})))
    nll = nll_of(ntm, held, args, g)
    samples, sample_s = timed(ntm.sample, 10_000, denoise="tweedie", generator=g)
    rows.append(dict(model="NTM T=4 tweedie", nll=nll, samples=samples, train_s=0.0,
                     sample_s=sample_s))
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        denoiser = Denoiser(2)
    steps = args.denoiser_steps if args.denoiser_steps is not None else args.steps
    result, train_s = timed(fit_denoiser, ntm, draw, denoiser=denoiser, **dict(opts, steps=steps))
    result.apply_ema()
    samples, sample_s = timed(ntm.sample, 10_000, denoise="learned", generator=g)
    rows.append(dict(model="NTM T=4 learned", nll=nll, samples=samples, train_s=train_s,
                     sample_s=sample_s))
    return rows


def run_toy(name: str, args: argparse.Namespace) -> list[dict]:
    data = toy(name)
    draw = lambda n, g: data.sample(n, generator=g)  # noqa: E731
    held = data.sample(10_000, generator=torch.Generator().manual_seed(10_000))
    schedule = nd.Schedule(steps=4, t_min=(0.0, 0.05), shift=args.shift)
    opts = dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                progress=args.progress, seed=args.seed)
    rows = []
    with torch.random.fork_rng():
        torch.manual_seed(args.seed)
        models = ntm_models(schedule, args.paper)
        velocity = Velocity(2)
        nsf = zuko.flows.NSF(2, transforms=3, hidden_features=(64, 64))
    g = torch.Generator().manual_seed(args.seed + 1)
    trained = {}
    for label, model in models.items():
        rows.append(trained_row(label, model, draw, held, opts, args, g))
        trained[label] = rows[-1]["ema_model"]
    result, train_s = timed(fit, velocity, draw, loss_fn=velocity_loss, **opts)
    v = result.ema_model
    for steps in (4, 64):
        samples, sample_s = timed(fm_sample, v, 10_000, steps=steps, generator=g)
        rows.append(dict(model=f"flow matching Euler {steps}", nll=None, samples=samples,
                         train_s=train_s, sample_s=sample_s))
    result, train_s = timed(fit, nsf, draw, loss_fn=nsf_loss, **opts)
    flow = result.ema_model
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(args.seed + 1)  # zuko samples from the global generator
        samples, sample_s = timed(lambda: flow().sample((10_000,)))
        nll = -flow().log_prob(held[: args.nll_points]).mean().item()
    rows.append(dict(model="zuko NSF (3 transforms)", nll=nll, samples=samples, train_s=train_s,
                     sample_s=sample_s))
    if args.fm_init:
        rows += issue5_rows(v, trained["NTM T=4"], draw, held, schedule, opts, args, g)
    if args.train_particles:
        with torch.random.fork_rng():
            torch.manual_seed(args.seed)  # the initial weights of "NTM T=4"
            model = nd.NTM((2,), schedule, train_particles=args.train_particles)
        rows.append(trained_row(f"NTM T=4, {args.train_particles} traj/example", model, draw,
                                held, opts, args, g))
    for row in rows:
        row.pop("ema_model", None)
        s = row.pop("samples")
        row["toy"] = name
        row["energy"] = energy_distance(s, held)
        row["on_support"] = fraction_on_support(s, name) if name == "checkerboard" else None
    return rows


def fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def table(rows: list[dict], floor: float | None = None) -> str:
    """The markdown table of one toy's rows; ``floor`` is the energy distance's noise floor
    (:func:`data_floor`, computed when not given)."""
    ref = next(r for r in rows if r["model"].startswith("flow matching Euler 64"))
    lines = [
        f"### {rows[0]['toy']}",
        "",
        "| model | NLL (nats) | on support | energy distance | train s | sample s/10k "
        "| sample time vs FM-64 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {fmt(r['nll'], '.3f')} | {fmt(r['on_support'], '.1%')} "
            f"| {r['energy']:.5f} | {r['train_s']:.0f} | {r['sample_s']:.3f} "
            f"| {r['sample_s'] / ref['sample_s']:.2f}x |"
        )
    floor = data_floor(rows[0]["toy"]) if floor is None else floor
    lines.append("")
    lines.append(f"Noise floor of the energy distance: {floor:.5f} between two independent "
                 "draws of 10k data points (values within a few times it are ties).")
    if rows[0]["toy"] == "checkerboard":
        lines.append("")
        lines.append(f"Entropy floor for the NLL: log 32 = {math.log(32):.3f} nats.")
    return "\n".join(lines)


def data_floor(name: str) -> float:
    """Energy distance between the held-out set and a fresh draw of 10k data points."""
    held = toy(name).sample(10_000, generator=torch.Generator().manual_seed(10_000))
    fresh = toy(name).sample(10_000, generator=torch.Generator().manual_seed(20_000))
    return energy_distance(fresh, held)


def print_tables(paths: list[Path]) -> None:
    """Re-print the tables of saved JSON results (``--print``), with their saved noise floors."""
    for path in paths:
        saved = read_results(path)
        rows, floors = saved["results"], saved.get("floors", {})
        for name in dict.fromkeys(r["toy"] for r in rows):
            print(table([r for r in rows if r["toy"] == name], floors.get(name)), end="\n\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 steps on the checkerboard")
    parser.add_argument("--toys", nargs="+", default=None, choices=sorted(TOYS))
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak lr of every model")
    parser.add_argument("--shift", type=float, default=1.0, help="grid shift m of the NTMs")
    parser.add_argument("--fm-steps", type=int, default=None,
                        help="fine-tuning steps N of the FM-initialised NTM (default: --steps; "
                             "otherwise an NTM is also trained from scratch for N steps)")
    parser.add_argument("--denoiser-steps", type=int, default=None,
                        help="steps of the learned denoiser (default: --steps)")
    parser.add_argument("--train-particles", type=int, default=None, metavar="K",
                        help="add the default NTM trained on the importance-weighted bound "
                             "with K trajectories per example")
    parser.add_argument("--particles", type=int, default=256)
    parser.add_argument("--nll-points", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--fm-init", action=argparse.BooleanOptionalAction, default=True,
                        help="add the issue-5 rows (FM-initialised fine-tuning, denoisers)")
    parser.add_argument("--paper", action=argparse.BooleanOptionalAction, default=True,
                        help="add the paper's configuration (no per-step bijector)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "toy2d.json")
    parser.add_argument("--print", nargs="+", type=Path, metavar="JSON",
                        help="only re-print the tables of saved results")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.print:
        return print_tables(args.print)
    if args.quick:
        args.steps, args.nll_points, args.particles = 300, 500, 64
        args.toys = args.toys or ["checkerboard"]
    toys = args.toys or ["checkerboard", "eight_gaussians", "two_moons", "pinwheel", "rings"]
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        results, floors = [], {}
        for name in toys:
            rows = run_toy(name, args)
            floors[name] = data_floor(name)
            print(table(rows, floors[name]), flush=True)
            print(flush=True)
            results.extend(rows)
    finally:
        torch.set_num_threads(previous)
    write_results(args, results=results, floors=floors)


if __name__ == "__main__":
    main()
