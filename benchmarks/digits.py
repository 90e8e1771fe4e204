"""8x8 digits benchmark: NTM T=4 vs Gaussian T=4 vs flow matching vs zuko
NSF/MAF, class-conditional, on scikit-learn's bundled digits (1797 images, no download).

Data: ``ntmdist.data.digits`` split once (seed 0, independent of ``--seed``) into 1497 training
and 300 held-out images. Training batches are dequantised afresh (bin centre plus uniform noise
of one bin, ``2/17``); the held-out images are dequantised once with a fixed seed.

Models, all class-conditional (10 classes, label dropout 0.1 for classifier-free guidance where
the model has a null label), trained by ``ntmdist.train.fit`` side by side in one process on the
same batches (same ``--seed``), with the same optimiser steps, batch size and learning-rate
schedule (AdamW, 5% warm-up, cosine decay, EMA 0.999; peak lr ``--lr``):

- "NTM T=4": ``nd.NTM((1, 8, 8), Schedule(4, t_min=(0, 0.05)), classes=10)`` with the default
  image networks sized for a CPU: two TarFlow causal-transformer blocks over 2x2 patches
  (``transporter_options=dict(width=64, depth=2)``) and the FiLM U-Net predictor (width 32).
- "Gaussian T=4": the same predictor, ``transporter=None`` (Gaussian reverse steps).
- "flow matching Euler 4 / 64": ``Velocity`` with a U-Net backbone of the same width (32),
  trained by ``velocity_loss`` (label dropout 0.1), sampled with 4 or 64 Euler steps (classifier-
  free guidance :math:`v_c + w (v_c - v_u)` for ``w > 0``).
- "zuko NSF" / "zuko MAF": ``zuko.flows.NSF`` / ``MAF`` on the flattened 64 pixels, 5 transforms,
  hidden (256, 256), a one-hot class as context; exact log-likelihood. Each is trained twice:
  for the same optimiser steps as the others ("same steps") and for the NTM's training
  wall-clock ("same time": its step time is measured on 20 steps first, and the steps are the
  NTM's training seconds divided by it). No null label, so no guidance.

Classifier (for the Frechet distance and the accuracy of samples): a small CNN, conv 3x3
(1->32), ReLU, conv 3x3 (32->64), ReLU, max-pool 2, conv 3x3 (64->64), ReLU, max-pool 2, linear
(256->64), ReLU [the 64 features], linear (64->10); trained with Adam (lr 1e-3, 1500 steps of
batch 64, fresh dequantisation, seed 0, one thread, CPU) on the training split only; 99.3%
accuracy on the 300 held-out images (printed at every run). It is cached in
``benchmarks/cache/digits_classifier.pt``, reused when present and made by the same recipe,
retrained otherwise (about 30 s; bitwise reproducible).

Columns:
- params: parameters (of the denoiser alone in the "learned" row). steps / train s: optimiser
  steps and training wall-clock seconds.
- bits/dim: held-out bits per dimension on the dequantised pixel scale (``bits_per_dim`` with
  ``DIGITS_LOG_SCALE``); NTM and Gaussian by the IWAE bound with ``--particles`` particles (an
  upper bound), NSF/MAF exactly, flow matching none. "vs NSF" divides by "zuko NSF (same time)".
- Frechet: Frechet distance between the classifier's 64 penultimate features of 5000 samples
  (``--per-class`` 500; clamped to the data range [-1, 1]) and of the 300 held-out images. The
  row "real train images" is a reference, not a floor (flow matching Euler 64 scores below it):
  the training images (up to ``--per-class`` of each class, so all 1497 by default) against the
  same held-out images. "vs FM-64" divides by flow
  matching Euler 64 without guidance. Why 5000: ten draws of 1000 samples of one trained flow
  matching model scored 52.8-64.3 at Euler 4 (standard deviation 3.5) and 29.5-42.4 at Euler 64
  (3.7); two draws of 5000 scored 57.1 / 56.8 and 35.4 / 33.8. Until this protocol every digits
  table used 1000 samples (100 per class), which cannot tell apart models a few units apart.
- accuracy: fraction of samples that the classifier assigns to the class they were drawn for
  (for "real" rows: the classifier's accuracy on those images).
- sample s/1000: wall-clock seconds per 1000 samples; "vs FM-64" as above.
- guidance table: ``model.sample(n, y, guidance=w)`` for w in {0, 1, 3}.

Issue-5 rows (``--fm-init``, on by default): "NTM T=4 from FM + N" is ``NTM.from_flow_matching`` on
the trained velocity, fine-tuned ``N = --fm-steps`` steps (default: as many as the others) with
``aux_weight=2.5`` (the velocity held for the first ``N // 10``), against the NTM trained from
scratch for the same ``N`` steps (the "NTM T=4" row, or "NTM T=4 scratch N" when ``N`` differs;
until this protocol ``N`` was a third of the steps); "NTM T=4 tweedie" and "NTM T=4 learned"
are the first NTM sampled with ``denoise="tweedie"`` and ``denoise="learned"`` (a ``Denoiser`` of
width 128 trained ``--denoiser-steps`` steps, by default as many as the NTM, by
``ntmdist.distill.fit_denoiser``; its train s is that). ``benchmarks/digits_ablate.py
--denoisers 333:128 1000:128 1000:256`` measured 47.5 / 43.3 / 43.3 Frechet for those sizes
(tweedie 49.1): a third of the steps was too few.

Cost, measured on one thread of a 2-core machine shared with other jobs (so a range), in
seconds per optimiser step of batch 64: NTM 0.29-0.43, Gaussian 0.17-0.23, flow matching
0.05-0.08, NSF 0.055, MAF 0.013, FM-initialised NTM 0.33-0.53, denoiser 0.19-0.23; the IWAE
bound with 64 particles 0.22 s per held-out image; 1000 samples: NTM 1-2 s, flow matching
Euler 64 14-26 s (twice that with guidance), NSF 13-22 s. One step of everything (the two
"same time" flows cost the NTM's time each) is 1.8-2.4 s, so the default 1000 steps take 30-40
min of training plus about 12 min of evaluation (5000 samples per row): 2849 s in the last full
run. ``--quick`` takes under 3 min (plus 30 s the first time, to train the classifier).

Usage::

    python benchmarks/digits.py                  # full: 1000 steps, batch 64 (about 50 min)
    python benchmarks/digits.py --quick          # 40 steps, 200 samples (a smoke run, ~3 min)
    python benchmarks/digits.py --no-fm-init     # without the issue-5 rows
    python benchmarks/digits.py --device cuda --steps 10000 --batch-size 256
    python benchmarks/digits.py --print benchmarks/results/digits.json  # re-print saved tables

Writes ``benchmarks/results/digits.json`` and prints markdown tables with ratios.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import zuko
from _results import read_results, write_results
from torch import Tensor, nn

import ntmdist as nd
from ntmdist.data import DIGITS_LOG_SCALE, digits
from ntmdist.distill import Denoiser, fit_denoiser
from ntmdist.flow_matching import Velocity, fit_velocity
from ntmdist.flow_matching import sample as fm_sample
from ntmdist.metrics import bits_per_dim, frechet_distance
from ntmdist.train import fit

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache" / "digits_classifier.pt"
CLASSES, HELD_OUT, SPLIT_SEED, BIN = 10, 300, 0, 2 / 17
EVENT = (1, 8, 8)
TRANSPORTER = dict(width=64, depth=2)
WIDTH = 32
GUIDANCE = (0.0, 1.0, 3.0)
CLASSIFIER_RECIPE = dict(version=1, split_seed=SPLIT_SEED, held_out=HELD_OUT, steps=1500,
                         batch_size=64, lr=1e-3, seed=0)


@dataclass
class Split:
    """Training images as bin centres (dequantised per batch by :meth:`draw`) and the held-out
    images, dequantised once."""

    centres: Tensor
    labels: Tensor
    held_x: Tensor
    held_y: Tensor

    def draw(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        idx = torch.randint(len(self.centres), (n,), generator=generator)
        x = self.centres[idx]
        return x + BIN * (torch.rand(x.shape, generator=generator) - 0.5), self.labels[idx]

    def per_class(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` dequantised training images of each class, class by class."""
        idx = torch.cat([(self.labels == c).nonzero().flatten()[:n] for c in range(CLASSES)])
        x = self.centres[idx]
        return x + BIN * (torch.rand(x.shape, generator=generator) - 0.5), self.labels[idx]


def split() -> Split:
    g = torch.Generator().manual_seed(SPLIT_SEED)
    centres, y = digits(dequantize=False)
    held, _ = digits(generator=g)
    order = torch.randperm(len(y), generator=g)
    train, test = order[HELD_OUT:], order[:HELD_OUT]
    return Split(centres[train], y[train], held[test], y[test])


class Classifier(nn.Module):
    """The CNN of the module docstring; :meth:`features` is its penultimate layer (64)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 64), nn.ReLU(),
        )
        self.head = nn.Linear(64, CLASSES)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x.clamp(-1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def train_classifier(data: Split) -> Classifier:
    """Deterministic: fixed seeds, one thread, CPU."""
    recipe, threads = CLASSIFIER_RECIPE, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(recipe["seed"])
            net = Classifier()
        opt = torch.optim.Adam(net.parameters(), lr=recipe["lr"])
        g = torch.Generator().manual_seed(recipe["seed"])
        for _ in range(recipe["steps"]):
            x, y = data.draw(recipe["batch_size"], g)
            loss = F.cross_entropy(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    return net.eval()


def load_classifier(data: Split, path: Path = CACHE) -> tuple[Classifier, float, bool]:
    """The cached classifier when its recipe matches, else a new one (saved); its held-out
    accuracy; whether it was trained now."""
    net = Classifier()
    if path.exists():
        state = torch.load(path, weights_only=True)
        if state.get("recipe") == CLASSIFIER_RECIPE:
            net.load_state_dict(state["model"])
            return net.eval(), state["accuracy"], False
    net = train_classifier(data)
    with torch.no_grad():
        accuracy = (net(data.held_x).argmax(-1) == data.held_y).double().mean().item()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict(), "recipe": CLASSIFIER_RECIPE, "accuracy": accuracy},
               path)
    return net.eval(), accuracy, True


class Judge:
    """Frechet distance to the held-out images and accuracy, in the classifier's features."""

    def __init__(self, net: Classifier, held_x: Tensor) -> None:
        self.net = net
        self.held = self.features(held_x)

    @torch.no_grad()
    def features(self, x: Tensor) -> Tensor:
        return torch.cat([self.net.features(c) for c in x.detach().cpu().float().split(500)])

    @torch.no_grad()
    def __call__(self, x: Tensor, y: Tensor) -> dict[str, float]:
        feats = self.features(x)
        hits = self.net.head(feats).argmax(-1) == y.cpu()
        return dict(frechet=frechet_distance(feats, self.held),
                    accuracy=hits.double().mean().item())


class GuidedVelocity(nn.Module):
    """Classifier-free guidance of a velocity: :math:`v_c + w (v_c - v_u)`."""

    def __init__(self, velocity: Velocity, w: float) -> None:
        super().__init__()
        self.velocity, self.w, self.event_shape = velocity, w, velocity.event_shape

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        v = self.velocity(x, t, y)
        return v if self.w == 0 else v + self.w * (v - self.velocity(x, t, None))


def flow_loss(flow: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Exact NLL of a zuko flow in nats per dimension, the class one-hot as context."""
    return -flow(F.one_hot(y, CLASSES).to(x)).log_prob(x.flatten(1)).mean() / x[0].numel()


def timed(fn: Callable, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def ntm_bits(model: nd.NTM, data: Split, args: argparse.Namespace, g: torch.Generator,
             device: torch.device) -> float:
    """Held-out bits/dim of the IWAE bound."""
    x, y = data.held_x[: args.bits_points].to(device), data.held_y[: args.bits_points].to(device)
    with torch.no_grad():
        bound = torch.cat([model.iwae(xb, yb, args.particles, g)
                           for xb, yb in zip(x.split(50), y.split(50), strict=True)])
    return float(bits_per_dim(-bound.mean().item() / x[0].numel(), DIGITS_LOG_SCALE))


def flow_bits(flow: nn.Module, data: Split, device: torch.device) -> float:
    x, y = data.held_x.to(device), data.held_y.to(device)
    with torch.no_grad():
        return float(bits_per_dim(flow_loss(flow, x, y).item(), DIGITS_LOG_SCALE))


class Bench:
    """The shared state of one run: data, judge, options; rows are appended to ``rows``."""

    def __init__(self, args: argparse.Namespace, data: Split, judge: Judge) -> None:
        self.args, self.data, self.judge, self.rows = args, data, judge, []
        self.device = torch.device(args.device)
        self.labels = torch.arange(CLASSES).repeat_interleave(args.per_class)
        self.g = torch.Generator().manual_seed(args.seed + 1)
        self.opts = dict(batch_size=args.batch_size, lr=args.lr, progress=args.progress,
                         seed=args.seed, device=self.device)

    def train(self, model: nn.Module, steps: int, **kwargs: Any) -> tuple[nn.Module, float]:
        kwargs = {**self.opts, **kwargs}
        result, train_s = timed(kwargs.pop("fit", fit), model, self.data.draw, steps=steps,
                                **kwargs)
        return result.ema_model.eval(), train_s

    def add(self, table: str, model: str, sampler: Callable[[Tensor], Tensor], **row: Any) -> dict:
        """Draw ``per_class`` samples of each class with ``sampler(labels)``, judge them."""
        labels = self.labels.to(self.device)
        samples, sample_s = timed(sampler, labels)
        row = dict(table=table, model=model, guidance=row.pop("guidance", 0.0), **row,
                   **self.judge(samples, labels), sample_s=sample_s * 1000 / len(labels))
        self.rows.append(row)
        return row

    def ntm(self, label: str, model: nd.NTM, steps: int, train_s: float,
            guidance: tuple[float, ...] = GUIDANCE, table: str = "main", **row: Any) -> float:
        bits = ntm_bits(model, self.data, self.args, self.g, self.device)
        for w in guidance:
            self.add(table, label, lambda y, w=w: model.sample(len(y), y, guidance=w,
                                                               generator=self.g),
                     guidance=w, params=params(model), steps=steps, train_s=train_s,
                     bits=bits, **row)
        return bits

    def flow(self, label: str, flow: nn.Module, steps: int, train_s: float) -> None:
        def sampler(y: Tensor) -> Tensor:
            with torch.no_grad():
                return flow(F.one_hot(y, CLASSES).float()).sample().reshape(len(y), *EVENT)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.args.seed + 2)
            self.add("main", label, sampler, params=params(flow), steps=steps, train_s=train_s,
                     bits=flow_bits(flow, self.data, self.device))

    def step_seconds(self, flow: nn.Module, steps: int = 20) -> float:
        """Seconds per optimiser step of ``flow`` (on a copy, after 3 warm-up steps)."""
        probe = copy.deepcopy(flow)
        self.train(probe, 3, loss_fn=flow_loss, progress=False)
        return self.train(probe, steps, loss_fn=flow_loss, progress=False)[1] / steps


def run(args: argparse.Namespace, data: Split, judge: Judge) -> list[dict]:
    bench, steps = Bench(args, data, judge), args.steps
    schedule = nd.Schedule(steps=4, t_min=(0.0, 0.05), shift=args.shift)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        ntm = nd.NTM(EVENT, schedule, classes=CLASSES, transporter_options=TRANSPORTER,
                     predictor_options=dict(width=WIDTH))
        gaussian = nd.NTM(EVENT, schedule, classes=CLASSES, transporter=None,
                          predictor_options=dict(width=WIDTH))
        velocity = Velocity(EVENT, classes=CLASSES, width=WIDTH)
        flows = {name: getattr(zuko.flows, name)(64, CLASSES, transforms=5,
                                                 hidden_features=(256, 256))
                 for name in ("NSF", "MAF")}
    ntm, ntm_s = bench.train(ntm, steps)
    bench.ntm("NTM T=4", ntm, steps, ntm_s)
    model, train_s = bench.train(gaussian, steps)
    bench.ntm("Gaussian T=4", model, steps, train_s)
    v, fm_s = bench.train(velocity, steps, fit=fit_velocity, label_dropout=0.1)
    for n in (4, 64):
        for w in GUIDANCE:
            guided = GuidedVelocity(v, w)
            bench.add("main", f"flow matching Euler {n}",
                      lambda y, n=n, guided=guided: fm_sample(guided, len(y), steps=n, y=y,
                                                              generator=bench.g),
                      guidance=w, params=params(v), steps=steps, train_s=fm_s, bits=None)
    for name, flow in flows.items():
        per_step = bench.step_seconds(flow)
        same_time = max(1, round(ntm_s / per_step))
        for label, n in (("same steps", steps), ("same time", same_time)):
            trained, train_s = bench.train(copy.deepcopy(flow), n, loss_fn=flow_loss)
            bench.flow(f"zuko {name} ({label})", trained, n, train_s)
    if args.fm_init:
        issue5(bench, ntm, v, schedule)
    return bench.rows


def issue5(bench: Bench, ntm: nd.NTM, velocity: Velocity, schedule: nd.Schedule) -> None:
    """FM-initialised fine-tuning vs scratch for N steps; tweedie and learned sampling."""
    args = bench.args
    n = args.steps if args.fm_steps is None else args.fm_steps
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        models = {f"NTM T=4 from FM + {n}": nd.NTM.from_flow_matching(
            velocity, schedule, transporter_options=TRANSPORTER)}
        if n != args.steps:  # otherwise the "NTM T=4" row is the NTM trained from scratch
            models[f"NTM T=4 scratch {n}"] = nd.NTM(EVENT, schedule, classes=CLASSES,
                                                    transporter_options=TRANSPORTER,
                                                    predictor_options=dict(width=WIDTH))
    for label, model in models.items():
        fine = dict(aux_weight=2.5, hold={"predictor.velocity": n // 10})
        trained, train_s = bench.train(model, n, **(fine if "from FM" in label else {}))
        bench.ntm(label, trained, n, train_s, guidance=(0.0,), table="issue5")
    bits = next(r["bits"] for r in bench.rows if r["model"] == "NTM T=4")
    bench.add("issue5", "NTM T=4 tweedie",
              lambda y: ntm.sample(len(y), y, denoise="tweedie", generator=bench.g),
              params=params(ntm), steps=args.steps, train_s=0.0, bits=bits)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        denoiser = Denoiser(ntm.features, CLASSES)
    steps = args.denoiser_steps if args.denoiser_steps is not None else args.steps
    result, train_s = timed(fit_denoiser, ntm, bench.data.draw, steps=steps, denoiser=denoiser,
                            **bench.opts)
    result.apply_ema()
    ntm.denoiser.eval()
    bench.add("issue5", "NTM T=4 learned",
              lambda y: ntm.sample(len(y), y, denoise="learned", generator=bench.g),
              params=params(ntm.denoiser), steps=steps, train_s=train_s, bits=bits)


def fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def ratio(v: float | None, ref: float | None) -> str:
    return "—" if v is None or not ref else f"{v / ref:.2f}x"


def find(rows: list[dict], model: str, guidance: float = 0.0) -> dict | None:
    return next((r for r in rows if r["model"] == model and r["guidance"] == guidance), None)


def tables(rows: list[dict], floor: dict, classifier: dict) -> str:
    fm64, nsf = find(rows, "flow matching Euler 64"), find(rows, "zuko NSF (same time)")
    nsf_bits = nsf["bits"] if nsf else None
    out = [
        f"Classifier: held-out accuracy {classifier['accuracy']:.1%}; Frechet distance of real "
        f"images (train vs held-out, {floor['n']} vs {HELD_OUT} images): {floor['frechet']:.3f}.",
        "",
        "### digits: likelihood and samples (no guidance)",
        "",
        "| model | params | steps | train s | bits/dim | bits/dim vs NSF | Frechet "
        "| Frechet vs FM-64 | accuracy | sample s/1000 | sample time vs FM-64 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| real train images | — | — | — | — | — | {floor['frechet']:.3f} "
        f"| {ratio(floor['frechet'], fm64['frechet'])} | {floor['accuracy']:.1%} | — | — |",
    ]
    for r in rows:
        if r["table"] == "main" and r["guidance"] == 0:
            out.append(
                f"| {r['model']} | {r['params']:,} | {r['steps']} | {r['train_s']:.0f} "
                f"| {fmt(r['bits'], '.3f')} | {ratio(r['bits'], nsf_bits)} | {r['frechet']:.3f} "
                f"| {ratio(r['frechet'], fm64['frechet'])} | {r['accuracy']:.1%} "
                f"| {r['sample_s']:.3f} | {ratio(r['sample_s'], fm64['sample_s'])} |"
            )
    out += ["", "### digits: classifier-free guidance w", "",
            "| model | w | Frechet | Frechet vs FM-64 (w=0) | accuracy | sample s/1000 |",
            "|---|---|---|---|---|---|"]
    for r in rows:
        if r["table"] == "main" and any(r["guidance"] > 0 and x["model"] == r["model"]
                                        for x in rows):
            out.append(f"| {r['model']} | {r['guidance']:g} | {r['frechet']:.3f} "
                       f"| {ratio(r['frechet'], fm64['frechet'])} | {r['accuracy']:.1%} "
                       f"| {r['sample_s']:.3f} |")
    issue = [r for r in rows if r["table"] == "issue5"]
    if issue:
        refs = [find(rows, m) for m in ("NTM T=4", "flow matching Euler 4",
                                        "flow matching Euler 64")]
        out += ["", "### digits: issue 5 (FM initialisation, denoisers)", "",
                "| model | steps | train s | bits/dim | Frechet | Frechet vs FM-64 | accuracy "
                "| sample s/1000 | sample time vs FM-64 |", "|---" * 9 + "|"]
        tuned = [r for r in issue if r["model"].startswith(("NTM T=4 from", "NTM T=4 scratch"))]
        for r in tuned + refs + [r for r in issue if r not in tuned]:
            out.append(
                f"| {r['model']} | {r['steps']} | {r['train_s']:.0f} | {fmt(r['bits'], '.3f')} "
                f"| {r['frechet']:.3f} | {ratio(r['frechet'], fm64['frechet'])} "
                f"| {r['accuracy']:.1%} | {r['sample_s']:.3f} "
                f"| {ratio(r['sample_s'], fm64['sample_s'])} |"
            )
    return "\n".join(out)


def print_tables(paths: list[Path]) -> None:
    """Re-print the tables of saved JSON results (``--print``)."""
    for path in paths:
        saved = read_results(path)
        print(tables(saved["results"], saved["floor"], saved["classifier"]))
        print(f"\ntotal {saved['total_s']:.0f} s", end="\n\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 40 steps, 20 samples per class, 8 particles")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak lr of every model")
    parser.add_argument("--shift", type=float, default=0.0, help="grid shift m of the NTMs")
    parser.add_argument("--particles", type=int, default=64, help="IWAE particles")
    parser.add_argument("--bits-points", type=int, default=HELD_OUT,
                        help="held-out images for the IWAE bound")
    parser.add_argument("--per-class", type=int, default=500,
                        help="samples per class (Frechet distances of 1000 samples moved by "
                             "~3.5 with the draws alone)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--fm-init", action=argparse.BooleanOptionalAction, default=True,
                        help="add the issue-5 rows (FM-initialised fine-tuning, denoisers)")
    parser.add_argument("--fm-steps", type=int, default=None,
                        help="fine-tuning steps N of the FM-initialised NTM (default: --steps; "
                             "otherwise an NTM is also trained from scratch for N steps)")
    parser.add_argument("--denoiser-steps", type=int, default=None,
                        help="steps of the learned denoiser (default: --steps)")
    parser.add_argument("--classifier", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "digits.json")
    parser.add_argument("--print", nargs="+", type=Path, metavar="JSON",
                        help="only re-print the tables of saved results")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.print:
        return print_tables(args.print)
    if args.quick:
        args.steps, args.particles, args.bits_points, args.per_class = 40, 8, 50, 20
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        begin = time.perf_counter()
        data = split()
        net, accuracy, fresh = load_classifier(data, args.classifier)
        judge = Judge(net, data.held_x)
        real_x, real_y = data.per_class(args.per_class, torch.Generator().manual_seed(1))
        floor = dict(judge(real_x, real_y), n=len(real_x))
        classifier = dict(accuracy=accuracy, trained_now=fresh, path=str(args.classifier),
                          recipe=CLASSIFIER_RECIPE)
        rows = run(args, data, judge)
        print(tables(rows, floor, classifier), flush=True)
        total = time.perf_counter() - begin
        print(f"\ntotal {total:.0f} s")
    finally:
        torch.set_num_threads(previous)
    write_results(args, classifier=classifier, floor=floor, total_s=total, results=rows)


if __name__ == "__main__":
    main()
