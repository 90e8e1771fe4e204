"""Amortised posterior estimation on sbibm: NTM T=4 vs zuko NSF, neural posterior estimation.

For each task of the sbibm benchmark (Lueckmann et al., "Benchmarking Simulation-Based
Inference", AISTATS 2021, arXiv 2101.04653) both models learn the posterior q(theta | x) from
the same simulations (theta ~ prior, x ~ simulator(theta)) under one protocol:

- theta and x standardised by the mean and standard deviation of the training split (the
  densities are learnt on that scale; posterior samples are mapped back);
- 10% of the simulations held out; ``ntmdist``'s ``fit`` for both models (AdamW, warm-up and
  cosine decay over ``--max-epochs``, EMA, the same batch and peak learning rate); the held-out
  loss after every epoch, early stopping after ``--patience`` epochs without improvement and the
  best weights restored;
- posterior samples outside the prior's support rejected (as sbi's ``DirectPosterior`` does);
  the accepted fraction is reported.

Models: "NTM T=4" is the library default for vectors with a context, ``nd.NTM((D,),
context=x_dim)``; "zuko NSF" is ``zuko.flows.NSF(D, x_dim, transforms=5, hidden_features=(64,
64))``. Metrics, per task: C2ST (``sbibm.metrics.c2st``: 0.5 is indistinguishable, 1.0 fully
separable) of ``--samples`` posterior samples against as many reference samples, for each of
observations 1..``--observations`` (mean and standard deviation over observations); training
wall-clock seconds; sampling seconds per ``--samples`` draws for one observation (median over
observations, rejection excluded); NTM/NSF ratios. "val loss" is each model's own training
loss on the held-out simulations, in nats per dimension of theta: the NSF's NLL, the NTM's
trajectory NLL (all levels): the two are not comparable with each other.

sbibm is an optional benchmark extra (``pip install 'ntmdist[sbibm]'``): its tasks, observations
and reference posterior samples ship inside the package, nothing is downloaded.

Usage::

    python benchmarks/sbi.py                         # full: 5 tasks, 10k simulations, obs 1-10
    python benchmarks/sbi.py --quick                 # two_moons, 2k simulations, obs 1-2, 1k
    python benchmarks/sbi.py --tasks slcp --models nsf
    python benchmarks/sbi.py --print benchmarks/results/sbi.json
    python benchmarks/sbi.py --tasks slcp --out benchmarks/results/sbi_slcp.json  # one task
    python benchmarks/sbi.py --print benchmarks/results/sbi_*.json   # their rows in one table

Writes ``benchmarks/results/sbi.json`` and prints one summary table and one table per task.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from types import ModuleType

import torch
import zuko
from _results import write_results
from _timing import sync, table
from torch import Tensor, nn

import ntmdist as nd
from ntmdist.train import fit

HERE = Path(__file__).resolve().parent
TASKS = ("two_moons", "slcp", "gaussian_mixture", "gaussian_linear", "bernoulli_glm")
MODELS = {"ntm": "NTM T=4", "nsf": "zuko NSF"}
FULL = dict(tasks=list(TASKS), simulations=10_000, observations=10, samples=10_000,
            max_epochs=500, patience=20)
QUICK = dict(tasks=["two_moons"], simulations=2000, observations=2, samples=1000, max_epochs=30,
             patience=5)
"""Defaults of the full run and of ``--quick``; options given on the command line win."""


def load_sbibm() -> ModuleType:
    """The ``sbibm`` package, or an ``ImportError`` naming the extra that installs it."""
    try:
        import sbibm
        import sbibm.metrics
    except ImportError as error:
        raise ImportError("benchmarks/sbi.py needs sbibm, an optional benchmark extra: "
                          "pip install 'ntmdist[sbibm]' (sbibm and future)") from error
    return sbibm


class Standardise:
    """Mean and standard deviation of the columns of ``data`` ``(N, D)``; ``(x - mean) / std``
    and back."""

    def __init__(self, data: Tensor) -> None:
        self.mean, self.std = data.mean(0), data.std(0).clamp_min(1e-8)

    def __call__(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse(self, z: Tensor) -> Tensor:
        return z * self.std.to(z) + self.mean.to(z)


def simulations(task: object, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` pairs ``(theta, x)`` of the task (sbibm draws from torch's global generator: it is
    seeded inside ``fork_rng``, so the caller's state is unchanged)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        theta = task.get_prior()(num_samples=n)
        return theta, task.get_simulator()(theta)


def split(theta: Tensor, x: Tensor, fraction: float, seed: int) -> tuple[tuple, tuple]:
    """A random ``(train, validation)`` split of the pairs, ``fraction`` held out."""
    order = torch.randperm(len(theta), generator=torch.Generator().manual_seed(seed))
    held = order[: max(1, round(fraction * len(theta)))]
    kept = order[len(held):]
    return (theta[kept], x[kept]), (theta[held], x[held])


def nsf_loss(flow: nn.Module, theta: Tensor, x: Tensor) -> Tensor:
    """The NSF's mean NLL of ``theta`` given ``x`` in nats per dimension (the NTM's unit)."""
    return -flow(x).log_prob(theta).mean() / theta.shape[-1]


def build(name: str, dim: int, context: int, seed: int) -> tuple[nn.Module, object]:
    """A model and its loss for ``fit`` (``None``: the model's own ``loss``), seeded."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if name == "ntm":
            return nd.NTM((dim,), context=context), None
        return zuko.flows.NSF(dim, context, transforms=5, hidden_features=(64, 64)), nsf_loss


def train(model: nn.Module, data: tuple, validation: tuple, loss_fn: object,
          args: argparse.Namespace) -> tuple[nn.Module, dict]:
    """Train with early stopping on the held-out loss (validated once per epoch); the trained
    model (the EMA copy, best weights restored) and what the run took."""
    per_epoch = math.ceil(len(data[0]) / args.batch_size)
    start = time.perf_counter()
    result = fit(model, data, steps=args.max_epochs * per_epoch, batch_size=args.batch_size,
                 lr=args.lr, loss_fn=loss_fn, seed=args.seed, progress=args.progress,
                 device=args.device, validation=validation, validate_every=per_epoch,
                 patience=args.patience)
    sync(args.device)
    losses = [v["loss"] for v in result.history["validation"]]
    return result.ema_model, dict(
        train_s=time.perf_counter() - start, epochs=result.step / per_epoch,
        best_epoch=result.best_step / per_epoch, val_loss=min(losses))


def draw(name: str, model: nn.Module, n: int, x: Tensor, seed: int) -> Tensor:
    """``n`` standardised posterior samples given one standardised observation ``x`` ``(C,)``."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if name == "ntm":
            return model.sample(n, x, generator=g)
        with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
            torch.manual_seed(seed)  # zuko samples from the global generator
            return model(x).sample((n,))


def posterior(name: str, model: nn.Module, n: int, x: Tensor, scale: tuple, prior: object,
              seed: int, device: str) -> tuple[Tensor, float, float]:
    """``n`` posterior samples (original scale, inside the prior's support) given the raw
    observation ``x``; the seconds of the first ``n`` draws; the fraction accepted."""
    theta_scale, x_scale = scale
    x = x_scale(x).to(device)
    start = time.perf_counter()
    first = draw(name, model, n, x, seed)
    sync(device)
    seconds = time.perf_counter() - start
    kept, drawn, batch = [], 0, first
    while True:
        theta = theta_scale.inverse(batch.cpu())
        kept.append(theta[prior.support.check(theta)])
        drawn += len(theta)
        accepted = sum(len(k) for k in kept)
        if accepted >= n:
            return torch.cat(kept)[:n], seconds, accepted / drawn
        if accepted < 1e-3 * drawn:
            raise RuntimeError(f"{MODELS[name]}: fewer than 0.1% of {drawn} posterior samples "
                               "fall inside the prior's support")
        seed += 1
        batch = draw(name, model, n, x, seed)


def run_task(task_name: str, sbibm: ModuleType, args: argparse.Namespace) -> list[dict]:
    task = sbibm.get_task(task_name)
    theta, x = simulations(task, args.simulations, args.seed)
    (theta_tr, x_tr), (theta_val, x_val) = split(theta, x, 0.1, args.seed)
    scale = (Standardise(theta_tr), Standardise(x_tr))
    data = (scale[0](theta_tr), scale[1](x_tr))
    validation = (scale[0](theta_val), scale[1](x_val))
    prior = task.get_prior_dist()
    rows = []
    for name in args.models:
        model, loss_fn = build(name, theta.shape[-1], x.shape[-1], args.seed)
        model, row = train(model, data, validation, loss_fn, args)
        row.update(task=task_name, model=MODELS[name], observations=[], c2st=[],
                   sample_s=[], accepted=[])
        for obs in range(1, args.observations + 1):
            reference = task.get_reference_posterior_samples(obs)[: args.samples]
            samples, seconds, accepted = posterior(
                name, model, len(reference), task.get_observation(obs)[0], scale, prior,
                args.seed + obs, args.device)
            row["observations"].append(obs)
            row["c2st"].append(float(sbibm.metrics.c2st(reference, samples)))
            row["sample_s"].append(seconds)
            row["accepted"].append(accepted)
        rows.append(row)
        print(f"{task_name} {MODELS[name]}: C2ST {statistics.mean(row['c2st']):.3f}, "
              f"train {row['train_s']:.0f} s, {row['epochs']:.0f} epochs", flush=True)
    return rows


def summary(rows: list[dict]) -> list[dict]:
    """One row per task and model: C2ST mean and standard deviation over observations, median
    sampling time, and the NTM/NSF ratios of the times."""
    out = []
    for r in rows:
        c = r["c2st"]
        out.append(dict(task=r["task"], model=r["model"], c2st=statistics.mean(c),
                        c2st_sd=statistics.stdev(c) if len(c) > 1 else None,
                        c2st_range=f"{min(c):.3f}-{max(c):.3f}", train_s=r["train_s"],
                        epochs=r["epochs"], best_epoch=r["best_epoch"], val_loss=r["val_loss"],
                        sample_s=statistics.median(r["sample_s"]),
                        accepted=statistics.mean(r["accepted"])))
    for s in out:
        nsf = next((o for o in out if o["task"] == s["task"] and o["model"] == MODELS["nsf"]),
                   None)
        if s["model"] == MODELS["ntm"] and nsf is not None:
            s["train_ratio"] = s["train_s"] / nsf["train_s"]
            s["sample_ratio"] = s["sample_s"] / nsf["sample_s"]
    return out


def tables(rows: list[dict], samples: int) -> str:
    """The summary table and one table of C2ST per observation for each task."""
    cols = [("task", "task", ""), ("model", "model", ""), ("C2ST mean", "c2st", ".3f"),
            ("sd", "c2st_sd", ".3f"), ("range", "c2st_range", ""),
            ("train s", "train_s", ".0f"), ("epochs", "epochs", ".0f"),
            ("best epoch", "best_epoch", ".0f"), ("val loss", "val_loss", ".3f"),
            (f"sample s/{samples}", "sample_s", ".3g"), ("accepted", "accepted", ".1%"),
            ("train NTM/NSF", "train_ratio", ".2f"), ("sample NTM/NSF", "sample_ratio", ".2f")]
    parts = [table("sbibm: amortised posterior estimation (NPE)", summary(rows), cols)]
    for name in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == name]
        obs = mine[0]["observations"]
        per = [dict(model=r["model"], **{str(o): c for o, c in zip(obs, r["c2st"], strict=True)})
               for r in mine]
        parts.append(table(f"{name}: C2ST per observation", per,
                           [("model", "model", "")] + [(str(o), str(o), ".3f") for o in obs]))
    return "\n\n".join(parts)


def print_tables(paths: list[Path]) -> None:
    """Print the tables of saved JSON results (``--print``), the rows of every file in one
    summary (e.g. one file per task, run in parallel)."""
    saved = [json.loads(path.read_text()) for path in paths]
    samples = {s["config"]["samples"] for s in saved}
    if len(samples) > 1:
        raise ValueError(f"the files were run with different --samples: {sorted(samples)}")
    print(tables([r for s in saved for r in s["results"]], samples.pop()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: two_moons, 2000 simulations, observations 1-2, 1000 "
                             "samples, at most 30 epochs, patience 5 (options given win)")
    parser.add_argument("--tasks", nargs="+", default=None, choices=TASKS)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--simulations", type=int, default=None, help="default 10000")
    parser.add_argument("--observations", type=int, default=None, choices=range(1, 11),
                        metavar="N", help="observations 1..N (at most 10; default 10)")
    parser.add_argument("--samples", type=int, default=None,
                        help="posterior samples per observation, and reference samples "
                             "(default 10000)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak lr of every model")
    parser.add_argument("--max-epochs", type=int, default=None, help="default 500")
    parser.add_argument("--patience", type=int, default=None,
                        help="epochs without improvement before stopping (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "sbi.json")
    parser.add_argument("--print", nargs="+", type=Path, metavar="JSON",
                        help="only re-print the tables of saved results")
    return parser


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options left unset with the defaults of ``--quick`` or of the full run."""
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.print:
        return print_tables(args.print)
    resolve(args)
    sbibm = load_sbibm()
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        results = []
        for name in args.tasks:
            results.extend(run_task(name, sbibm, args))
    finally:
        torch.set_num_threads(previous)
    print(tables(results, args.samples), flush=True)
    write_results(args, results=results)


if __name__ == "__main__":
    main()
