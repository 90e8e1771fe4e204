"""The models of ``benchmarks/digits.py`` by name, and :class:`Bench`: the shared state of one run
(data, quality judge, options, cache), training, and rows of judged samples.

Every model is built under ``torch.manual_seed(--seed)`` on its own, and trained by
``ntmdist.training.fit`` on the same batches (``seed=--seed``) with the same steps, batch size
and learning-rate schedule, so a model is the same whichever parts run and in which process.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
import zuko
from _digits_cache import ModelCache
from _digits_data import CLASSES, EVENT, TRANSPORTER, WIDTH, Split
from _digits_quality import REFERENCES, Quality, collect, draw_seed, stat
from torch import Tensor, nn

import ntmdist as nd
from ntmdist.data import DIGITS_LOG_SCALE
from ntmdist.distill import Denoiser
from ntmdist.dit import TransformerPredictor
from ntmdist.flow_matching import Velocity
from ntmdist.metrics import bits_per_dim
from ntmdist.training import fit, fit_denoiser, fit_velocity

__all__ = ["MODELS", "Bench", "GuidedVelocity", "curve", "flow_loss", "ntm_bits", "params",
           "schedule", "seeded", "timed"]

MULTI_T = (4, 8, 16)
DIT = dict(patch=2, width=64, depth=5, heads=4)  # ~401k parameters, the U-Net's (width 32) 411k


def schedule(args: argparse.Namespace, steps: int = 4) -> nd.Schedule:
    return nd.Schedule(steps, t_min=(0.0, 0.05), shift=args.shift)


def _ntm(args: argparse.Namespace, steps: int = 4, gaussian: bool = False,
         train_steps: tuple[int, ...] | None = None, predictor: nn.Module | None = None) -> nd.NTM:
    transporter = dict(transporter=None) if gaussian else dict(transporter_options=TRANSPORTER)
    net = dict(predictor_options=dict(width=WIDTH)) if predictor is None else dict(
        predictor=predictor)
    return nd.NTM(EVENT, schedule(args, steps), classes=CLASSES, train_steps=train_steps,
                  **transporter, **net)


def flow_loss(flow: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Exact NLL of a zuko flow in nats per dimension, the class one-hot as context."""
    return -flow(F.one_hot(y, CLASSES).to(x)).log_prob(x.flatten(1)).mean() / x[0].numel()


def _zuko(name: str) -> nn.Module:
    return getattr(zuko.flows, name)(64, CLASSES, transforms=5, hidden_features=(256, 256))


MODELS: dict[str, tuple[Callable[[argparse.Namespace], nn.Module], dict]] = {
    **{f"NTM T={T}": (lambda a, T=T: _ntm(a, T), {}) for T in MULTI_T},
    **{f"Gaussian T={T}": (lambda a, T=T: _ntm(a, T, gaussian=True), {}) for T in MULTI_T},
    "NTM multi-T": (lambda a: _ntm(a, train_steps=MULTI_T), {}),
    "Gaussian multi-T": (lambda a: _ntm(a, gaussian=True, train_steps=MULTI_T), {}),
    "NTM T=4 transformer": (lambda a: _ntm(a, predictor=TransformerPredictor(
        EVENT, classes=CLASSES, **DIT)), {}),
    "flow matching": (lambda a: Velocity(EVENT, classes=CLASSES, width=WIDTH),
                      dict(fit=fit_velocity, label_dropout=0.1)),
    "zuko NSF": (lambda a: _zuko("NSF"), dict(loss_fn=flow_loss)),
    "zuko MAF": (lambda a: _zuko("MAF"), dict(loss_fn=flow_loss)),
}
"""The models by name: how to build one from the options (``--shift``), and how ``fit`` trains
it (NTMs by their own loss)."""


def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def curve(method: str, T: int, nfe: int, inversion: bool) -> dict:
    """A row's place on the step-count curve: its line, sampler steps, network evaluations
    (predictor or velocity; +1 for the learned denoiser) and whether it inverts the
    transporter."""
    return dict(method=method, T=T, nfe=nfe, inversion=inversion)


class GuidedVelocity(nn.Module):
    """Classifier-free guidance of a velocity: :math:`v_c + w (v_c - v_u)`."""

    def __init__(self, velocity: Velocity, w: float) -> None:
        super().__init__()
        self.velocity, self.w, self.event_shape = velocity, w, velocity.event_shape

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        v = self.velocity(x, t, y)
        return v if self.w == 0 else v + self.w * (v - self.velocity(x, t, None))


def timed(fn: Callable, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def ntm_bits(model: nd.NTM, data: Split, args: argparse.Namespace, g: torch.Generator,
             device: torch.device, schedule: nd.Schedule | None = None) -> float:
    """Held-out bits/dim of the IWAE bound (on ``schedule``'s grid, default the model's)."""
    x, y = data.held_x[: args.bits_points].to(device), data.held_y[: args.bits_points].to(device)
    with torch.no_grad():
        bound = torch.cat([model.iwae(xb, yb, args.particles, g, schedule=schedule)
                           for xb, yb in zip(x.split(50), y.split(50), strict=True)])
    return float(bits_per_dim(-bound.mean().item() / x[0].numel(), DIGITS_LOG_SCALE))


def flow_bits(flow: nn.Module, data: Split, device: torch.device) -> float:
    x, y = data.held_x.to(device), data.held_y.to(device)
    with torch.no_grad():
        return float(bits_per_dim(flow_loss(flow, x, y).item(), DIGITS_LOG_SCALE))


class Bench:
    """The shared state of one run; judged rows (``draws`` draws of samples each) are appended
    to ``rows``. Without ``cache`` every model is trained in this process."""

    def __init__(self, args: argparse.Namespace, data: Split, quality: Quality,
                 cache: ModelCache | None = None, draws: int = 1) -> None:
        self.args, self.data, self.quality, self.cache = args, data, quality, cache
        self.draws = draws
        self.rows: list[dict] = []
        self.device = torch.device(args.device)
        self.labels = torch.arange(CLASSES).repeat_interleave(args.per_class)
        self.g = torch.Generator().manual_seed(args.seed + 1)
        self.opts = dict(batch_size=args.batch_size, lr=args.lr, progress=args.progress,
                         seed=args.seed, device=self.device)
        self._models: dict[str, tuple[nn.Module, dict]] = {}
        self._bits: dict[tuple[str, int | None], float] = {}

    def train(self, model: nn.Module, steps: int, **kwargs: Any) -> tuple[nn.Module, float]:
        kwargs = {**self.opts, **kwargs}
        result, train_s = timed(kwargs.pop("fit", fit), model, self.data.draw, steps=steps,
                                **kwargs)
        return result.ema_model.eval(), train_s

    def model(self, label: str, module: nn.Module | None = None,
              steps: int | Callable[[nn.Module], int] | None = None, key: dict | None = None,
              **fit_options: Any) -> tuple[nn.Module, dict]:
        """The trained model ``label`` (``module``, by default ``MODELS[label]`` seeded) and
        ``{"train_s": ..., "steps": ...}``: from this run, the cache, or trained now for
        ``steps`` (default ``--steps``; a function of the module: worked out before training).
        ``key``: more of the recipe, for the cache."""
        if label in self._models:
            return self._models[label]
        args = self.args
        if module is None:
            build, options = MODELS[label]
            module, fit_options = seeded(args.seed, lambda: build(args)), options | fit_options
        module, steps = module.to(self.device), args.steps if steps is None else steps
        recipe = (dict(steps=steps if isinstance(steps, int) else "derived", shift=args.shift)
                  | {k: str(v) for k, v in self.opts.items() if k != "progress"}
                  | {k: getattr(v, "__name__", None) or repr(v) for k, v in fit_options.items()}
                  | (key or {}))

        def train(m: nn.Module) -> tuple[nn.Module, dict]:
            n = steps if isinstance(steps, int) else steps(m)
            trained, train_s = self.train(m, n, **fit_options)
            return trained, dict(train_s=train_s, steps=n)

        found = (self.cache.get(label, module, recipe, train) if self.cache is not None
                 else train(module))
        self._models[label] = found
        return found

    def denoiser(self, label: str, ntm: nd.NTM) -> dict:
        """Attach the learned denoiser of the NTM ``label`` (trained ``--denoiser-steps``,
        default ``--steps``, by ``fit_denoiser``; cached) to ``ntm``; its measurements."""
        args = self.args
        steps = args.steps if args.denoiser_steps is None else args.denoiser_steps
        module = seeded(args.seed, lambda: Denoiser(ntm.features, CLASSES)).to(self.device)

        def train(d: nn.Module) -> tuple[nn.Module, dict]:
            result, train_s = timed(fit_denoiser, ntm, self.data.draw, steps=steps, denoiser=d,
                                    **self.opts)
            result.apply_ema()
            return ntm.denoiser.eval(), dict(train_s=train_s, steps=steps)

        recipe = dict(ntm=label, ntm_steps=args.steps, steps=steps, shift=args.shift,
                      **{k: str(v) for k, v in self.opts.items() if k != "progress"})
        found = (self.cache.get(f"{label} denoiser", module, recipe, train)
                 if self.cache is not None else train(module))
        ntm.denoiser = found[0]
        return found[1]

    def bits(self, model: nd.NTM, label: str, steps: int | None = None) -> float:
        """Held-out bits/dim of the NTM ``label`` at ``steps`` steps (default its own), once
        per run."""
        if (label, steps) not in self._bits:
            g = torch.Generator().manual_seed(draw_seed(self.args.seed, label, "bits"))
            grid = None if steps is None else model.schedule.with_steps(steps)
            self._bits[label, steps] = ntm_bits(model, self.data, self.args, g, self.device, grid)
        return self._bits[label, steps]

    def add(self, table: str, model: str, sampler: Callable[[Tensor, torch.Generator], Tensor],
            **row: Any) -> dict:
        """Draw ``--per-class`` samples of each class with ``sampler(labels, generator)``
        :attr:`draws` times (each draw seeded by the row's name), judge each draw."""
        labels, guidance = self.labels.to(self.device), row.pop("guidance", 0.0)
        draws, seconds = [], 0.0
        for d in range(self.draws):
            seed = draw_seed(self.args.seed, model, guidance, d)
            samples, s = timed(sampler, labels, torch.Generator().manual_seed(seed))
            draws.append(self.quality.judge(samples, labels, seed))
            seconds += s
        row = dict(table=table, model=model, guidance=guidance, **row, draws=len(draws),
                   **{ref: collect([d[ref] for d in draws]) for ref in REFERENCES},
                   accuracy=[d["accuracy"] for d in draws],
                   sample_s=seconds * 1000 / (len(labels) * len(draws)))
        self.rows.append(row)
        frechet = stat(row, "train", "frechet")
        print(f"[{table}] {model} (w={guidance:g}): Frechet vs train {frechet[0]:.2f}, "
              f"{row['sample_s']:.2f} s/1000 samples", flush=True)
        return row

    def ntm(self, table: str, label: str, model: nd.NTM, meta: dict, guidance: float = 0.0,
            denoise: str | None = None, **row: Any) -> dict:
        """A row of ``model.sample``, at ``row["T"]`` steps when given (else the model's);
        params: the NTM's without its learned denoiser."""
        grid = model.schedule.with_steps(row["T"]) if "T" in row else None
        own = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("denoiser."))
        row = dict(params=own, predictor_params=params(model.predictor),
                   steps=meta["steps"], train_s=meta["train_s"]) | row
        return self.add(table, label, lambda y, g: model.sample(
            len(y), y, guidance=guidance, denoise=denoise, generator=g, schedule=grid),
            guidance=guidance, **row)

    def flow(self, label: str, flow: nn.Module, meta: dict) -> None:
        """A row of the zuko flow (sampled under ``torch.manual_seed``: zuko takes no
        generator)."""
        def sampler(y: Tensor, g: torch.Generator) -> Tensor:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(g.initial_seed())
                return flow(F.one_hot(y, CLASSES).float()).sample().reshape(len(y), *EVENT)

        self.add("main", label, sampler, params=params(flow), steps=meta["steps"],
                 train_s=meta["train_s"], bits=flow_bits(flow, self.data, self.device))

    def step_seconds(self, model: nn.Module, **fit_options: Any) -> float:
        """Seconds per optimiser step of ``model`` (on a copy, after 3 warm-up steps; 20
        timed steps, or ``--steps`` when fewer)."""
        probe, n = copy.deepcopy(model), min(20, self.args.steps)
        self.train(probe, 3, progress=False, **fit_options)
        return self.train(probe, n, progress=False, **fit_options)[1] / n
