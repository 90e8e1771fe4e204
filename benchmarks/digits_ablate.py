"""Ablations of the digits NTM: ``benchmarks/digits.py``'s "NTM T=4" row with knobs.

Each run trains one class-conditional NTM T=4 exactly as ``benchmarks/digits.py`` does (same
split, batches, optimiser and schedule; 1000 steps of batch 64, peak lr 1e-3, TarFlow
transporter of width 64 and depth 2, U-Net predictor of width 32) with some settings changed,
then reports the held-out IWAE bits/dim and the Frechet distance and accuracy of 1000 samples
(100 per class) in the cached classifier's features, sampled plainly and with
``denoise="tweedie"``. ``--from-fm K`` instead trains digits.py's flow-matching model for ``K``
steps, reports its Euler 4 and 64 samples, and fine-tunes ``NTM.from_flow_matching`` on it for
``--steps`` steps (the mean alignment ``MeanAlignment(model.predictor, weight=--aux)``, the
velocity held for the first ``--hold`` steps, by default a tenth; ``--steps 0`` measures the
initial NTM, the flow-matching model as a 4-step ancestral sampler). ``--denoisers
STEPS:WIDTH ...`` then trains a learned ``Denoiser`` of that width (depth 2) for that many steps
on the trained NTM, one per entry, and reports ``denoise="learned"`` samples and their sampling
time against ``"tweedie"`` (digits.py trains one of width 128 for as many steps as the NTM).
Runs are independent processes (several can run side by side, e.g. on a GPU with
``--device cuda``); each appends one JSON line to ``--out``.

The Frechet distance of 1000 samples moves by several units with the random draws alone (the
same trained NTM sampled with tweedie scored 44.8 in digits.py and 49.1 here; this script's runs
agree between a CPU and a GPU): repeat seeds before trusting a difference of a few units.

Usage::

    python benchmarks/digits_ablate.py --tag default
    python benchmarks/digits_ablate.py --tag predictor-64 --predictor-width 64
    python benchmarks/digits_ablate.py --tag iwae-4 --train-particles 4   # NTM(train_particles=4)
    python benchmarks/digits_ablate.py --tag fm-init-1000 --from-fm 1000
    python benchmarks/digits_ablate.py --tag denoisers --denoisers 333:128 1000:256
    python benchmarks/digits_ablate.py --tag quick --steps 20 --per-class 10   # a smoke run
    python benchmarks/digits_ablate.py --print benchmarks/results/digits_ablate.jsonl  # a table
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _digits_bench import Bench, ntm_bits, params
from _digits_data import CLASSES, EVENT, TRANSPORTER, WIDTH, load_classifier, split
from _digits_quality import Quality, stat
from _results import append_row, read_results, runs_table
from torch import Tensor

import ntmdist as nd
from ntmdist.alignment import MeanAlignment
from ntmdist.distill import Denoiser
from ntmdist.flow_matching import Velocity
from ntmdist.flow_matching import sample as fm_sample
from ntmdist.training import fit_denoiser, fit_velocity

HERE = Path(__file__).resolve().parent


def build(args: argparse.Namespace) -> tuple[nd.NTM | None, Velocity | None]:
    """The NTM of digits.py with the knobs of ``args``, or the velocity to initialise it from
    (seeded by the caller)."""
    if args.from_fm:
        return None, Velocity(EVENT, classes=CLASSES, width=WIDTH)
    transporter = {**TRANSPORTER, "width": args.transporter_width,
                   "depth": args.transporter_depth, "blocks": args.blocks}
    if args.patch:
        transporter["patch"] = args.patch
    model = nd.NTM(EVENT, nd.Schedule(4, t_min=(0.0, 0.05), shift=args.shift), classes=CLASSES,
                   transporter_options=transporter,
                   predictor_options=dict(width=args.predictor_width),
                   train_particles=args.train_particles)
    return model, None


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    data = split()
    net, _, _ = load_classifier(data)
    bench = Bench(args, data, Quality(net, data))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model, velocity = build(args)
    row: dict = dict(tag=args.tag)
    start = time.perf_counter()
    if velocity is not None:
        velocity, row["fm_train_s"] = bench.train(velocity, args.from_fm, fit=fit_velocity,
                                                  label_dropout=0.1)
        for n in (4, 64):
            fm = judged(bench, f"fm{n}", lambda y, g, n=n: fm_sample(velocity, len(y), steps=n,
                                                                    y=y, generator=g))
            row[f"fm{n}_frechet"], row[f"fm{n}_accuracy"] = fm["frechet"], fm["accuracy"]
        schedule = nd.Schedule(4, t_min=(0.0, 0.05), shift=args.shift)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            model = nd.NTM.from_flow_matching(velocity, schedule, transporter_options=TRANSPORTER)
        start = time.perf_counter()
    if args.steps:
        fine = {}
        if args.from_fm:
            hold = args.steps // 10 if args.hold is None else args.hold
            fine = dict(aux=MeanAlignment(model.predictor, weight=args.aux),
                        hold={"predictor.velocity": hold})
        model, _ = bench.train(model, args.steps, **fine)
    else:
        model = model.to(bench.device).eval()
    row["train_s"] = time.perf_counter() - start
    row["bits"] = ntm_bits(model, data, args, bench.g, bench.device)
    for key, options in (("", {}), ("tweedie_", {"denoise": "tweedie"})):
        row.update({key + k: v for k, v in judged(bench, key, lambda y, g, o=options: (
            model.sample(len(y), y, generator=g, **o))).items()})
    row["params"] = params(model)
    for spec in args.denoisers:
        row.update(learned(model, bench, spec, args.seed))
    return row


def learned(model: nd.NTM, bench: Bench, spec: str, seed: int) -> dict:
    """Train a ``Denoiser`` as ``spec`` (``STEPS:WIDTH``) on ``model`` and judge its samples."""
    steps, width = (int(v) for v in spec.split(":"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        denoiser = Denoiser(model.features, CLASSES, width=width)
    start = time.perf_counter()
    result = fit_denoiser(model, bench.data.draw, steps=steps, denoiser=denoiser, **bench.opts)
    result.apply_ema()
    model.denoiser.eval()
    train_s = time.perf_counter() - start
    scores = judged(bench, f"learned {spec}", lambda y, g: model.sample(
        len(y), y, denoise="learned", generator=g))
    key = f"learned_{steps}x{width}_"
    return {key + k: v for k, v in {**scores, "train_s": train_s}.items()}


def judged(bench: Bench, name: str, sampler: Callable[[Tensor, torch.Generator], Tensor]
           ) -> dict[str, float]:
    """The Frechet distance of one draw of samples to the held-out images, their accuracy and
    the seconds per 1000 samples."""
    row = bench.add("ablate", name, sampler)
    return dict(frechet=stat(row, "held", "frechet")[0],
                accuracy=stat(row, None, "accuracy")[0], sample_s=row["sample_s"])


COLUMNS = [("tag", "tag", ""), ("bits/dim", "bits", ".3f"), ("Frechet", "frechet", ".1f"),
           ("Frechet, tweedie", "tweedie_frechet", ".1f"), ("accuracy", "accuracy", ".1%"),
           ("params", "params", ","), ("train s", "train_s", ".0f")]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tag", default="default", help="name of this run in the table")
    p.add_argument("--steps", type=int, default=1000, help="NTM steps (fine-tuning steps)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shift", type=float, default=0.0, help="grid shift m")
    p.add_argument("--transporter-width", type=int, default=TRANSPORTER["width"])
    p.add_argument("--transporter-depth", type=int, default=TRANSPORTER["depth"])
    p.add_argument("--blocks", type=int, default=2, help="TarFlow blocks")
    p.add_argument("--patch", type=int, default=None, help="patch size (default: automatic)")
    p.add_argument("--predictor-width", type=int, default=WIDTH)
    p.add_argument("--train-particles", type=int, default=1, metavar="K",
                   help="train on the importance-weighted bound with K trajectories per example")
    p.add_argument("--from-fm", type=int, default=0, metavar="K",
                   help="initialise from a flow-matching model trained K steps")
    p.add_argument("--aux", type=float, default=2.5,
                   help="weight of the mean alignment of FM fine-tuning")
    p.add_argument("--hold", type=int, default=None, metavar="K",
                   help="FM fine-tuning: hold the velocity K steps (default: steps // 10)")
    p.add_argument("--denoisers", nargs="*", default=[], metavar="STEPS:WIDTH",
                   help="learned denoisers to train on the NTM and judge")
    p.add_argument("--particles", type=int, default=64)
    p.add_argument("--bits-points", type=int, default=300)
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--out", type=Path, default=HERE / "results" / "digits_ablate.jsonl")
    p.add_argument("--print", nargs="+", type=Path, metavar="JSONL",
                   help="only print the saved runs as a table")
    return p


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse(argv)
    if args.print:
        for path in args.print:
            print(runs_table(read_results(path), build_parser(), COLUMNS), end="\n\n")
        return None
    row = run(args)
    row = append_row(args, row)
    print(f"{row['tag']}: {row['bits']:.3f} bits/dim, Frechet {row['frechet']:.2f} "
          f"(tweedie {row['tweedie_frechet']:.2f}), accuracy {row['accuracy']:.1%}, "
          f"train {row['train_s']:.0f} s; appended to {args.out}")
    return row


if __name__ == "__main__":
    main()
