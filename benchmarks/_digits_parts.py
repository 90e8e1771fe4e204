"""The parts of ``benchmarks/digits.py`` (``--parts``); each appends judged rows to the bench.

- ``main``: NTM T=4, Gaussian T=4, flow matching Euler 4 and 64, zuko NSF/MAF at the same
  steps and the same time (no guidance).
- ``guidance``: the NTM, the Gaussian chain and flow matching Euler 4 / 64 at w = 1 and 3.
- ``warmstart``: the NTM initialised from the flow-matching velocity and fine-tuned, and the NTM
  T=4 sampled with trajectory Tweedie and with its learned denoiser.
- ``steps``: the step-count curve: one NTM trained on T in {4, 8, 16} (as the paper does) and the
  Gaussian chain likewise, sampled at each T, the NTM also with its learned denoiser; with
  ``--per-T`` separate NTMs and Gaussian chains for T = 8 and 16 (T = 4: ``main``'s), each NTM
  with its denoiser; flow matching Euler at 8 and 16 steps (4 and 64: ``main``'s) and Heun at
  4, 8, 16 and 64 evaluations (n / 2 steps).
- ``predictors``: the NTM T=4 with the transformer predictor, for the same steps as the U-Net
  NTM (``main``'s) and for its training wall-clock.
"""

from __future__ import annotations

from _digits_bench import (
    MODELS,
    MULTI_T,
    Bench,
    GuidedVelocity,
    curve,
    params,
    schedule,
    seeded,
)
from _digits_data import TRANSPORTER
from torch import nn

import ntmdist as nd
from ntmdist.alignment import MeanAlignment
from ntmdist.flow_matching import sample as fm_sample

__all__ = ["PARTS", "WARM_START", "run"]

PARTS = ("main", "guidance", "warmstart", "steps", "predictors")
GUIDANCE = (1.0, 3.0)
WARM_START = "warm_start"  # the table of FM-initialised fine-tuning and denoisers
HEUN_NFE = (4, 8, 16, 64)


def _flow_matching(bench: Bench, table: str, nfe: int, method: str = "euler",
                   w: float = 0.0) -> None:
    v, meta = bench.model("flow matching")
    steps = nfe if method == "euler" else nfe // 2
    name = f"flow matching Euler {nfe}" if method == "euler" else f"flow matching Heun NFE {nfe}"
    guided = GuidedVelocity(v, w)
    place = curve(f"flow matching {method.title()}", steps, nfe, False) if w == 0 else {}
    bench.add(table, name, lambda y, g: fm_sample(guided, len(y), steps=steps, method=method,
                                                  y=y, generator=g),
              guidance=w, params=params(v), steps=meta["steps"], train_s=meta["train_s"],
              bits=None, **place)


def _same_time(bench: Bench, label: str, budget_s: float) -> tuple[nn.Module, dict]:
    """``MODELS[label]`` trained for ``budget_s`` seconds: its seconds per step measured on a
    copy first."""
    build, options = MODELS[label]
    module = seeded(bench.args.seed, lambda: build(bench.args))
    steps = lambda m: max(1, round(budget_s / bench.step_seconds(m, **options)))  # noqa: E731
    return bench.model(f"{label} (same time)", module, steps, key=dict(budget_s=budget_s),
                       **options)


def main(bench: Bench) -> None:
    for kind in ("NTM", "Gaussian"):
        label = f"{kind} T=4"
        model, meta = bench.model(label)
        bench.ntm("main", label, model, meta, bits=bench.bits(model, label),
                  **curve(f"{kind} per-T", 4, 4, kind == "NTM"))
    for n in (4, 64):
        _flow_matching(bench, "main", n)
    ntm_s = bench.model("NTM T=4")[1]["train_s"]
    for name in ("zuko NSF", "zuko MAF"):
        bench.flow(f"{name} (same steps)", *bench.model(name))
        bench.flow(f"{name} (same time)", *_same_time(bench, name, ntm_s))


def guidance(bench: Bench) -> None:
    for label in ("NTM T=4", "Gaussian T=4"):
        model, meta = bench.model(label)
        for w in GUIDANCE:
            bench.ntm("guidance", label, model, meta, guidance=w, bits=None)
    for n in (4, 64):
        for w in GUIDANCE:
            _flow_matching(bench, "guidance", n, w=w)


def warmstart(bench: Bench) -> None:
    args = bench.args
    n = args.steps if args.fm_steps is None else args.fm_steps
    v, _ = bench.model("flow matching")
    label = f"NTM T=4 from FM + {n}"
    module = seeded(args.seed, lambda: nd.NTM.from_flow_matching(
        v, schedule(args), transporter_options=TRANSPORTER))
    model, meta = bench.model(label, module, n, key=dict(aux_weight=2.5),
                              aux=MeanAlignment(module.predictor, weight=2.5),
                              hold={"predictor.velocity": n // 10})
    bench.ntm(WARM_START, label, model, meta, bits=bench.bits(model, label))
    if n != args.steps:  # otherwise the "NTM T=4" row is the NTM trained from scratch
        label = f"NTM T=4 scratch {n}"
        module = seeded(args.seed, lambda: MODELS["NTM T=4"][0](args))
        model, meta = bench.model(label, module, n)
        bench.ntm(WARM_START, label, model, meta, bits=bench.bits(model, label))
    ntm, meta = bench.model("NTM T=4")
    bits = bench.bits(ntm, "NTM T=4")
    bench.ntm(WARM_START, "NTM T=4 tweedie", ntm, meta, denoise="tweedie", bits=bits,
              train_s=0.0)
    learned = bench.denoiser("NTM T=4", ntm)
    bench.ntm(WARM_START, "NTM T=4 learned", ntm, learned, denoise="learned", bits=bits,
              params=params(ntm.denoiser), **curve("NTM per-T + learned denoiser", 4, 5, False))


def _curve_point(bench: Bench, model: nd.NTM, meta: dict, label: str, line: str, T: int,
                 learned: dict | None) -> None:
    """The rows of ``model`` sampled at ``T`` steps: plain, and with the learned denoiser."""
    bits = bench.bits(model, label, T)
    row = label if label.endswith(f"T={T}") else f"{label} T={T}"
    bench.ntm("steps", row, model, meta, bits=bits, **curve(line, T, T, line.startswith("NTM")))
    if learned is not None:
        bench.ntm("steps", f"{row} learned", model, learned, denoise="learned", bits=bits,
                  params=params(model.denoiser),
                  **curve(f"{line} + learned denoiser", T, T + 1, False))


def steps(bench: Bench) -> None:
    for kind in ("NTM", "Gaussian"):
        label = f"{kind} multi-T"
        model, meta = bench.model(label)
        learned = bench.denoiser(label, model) if kind == "NTM" else None
        for T in MULTI_T:
            _curve_point(bench, model, meta, label, label, T, learned)
    for T in bench.args.per_T:  # T = 4: main's models
        for kind in ("NTM", "Gaussian"):
            label = f"{kind} T={T}"
            model, meta = bench.model(label)
            learned = bench.denoiser(label, model) if kind == "NTM" else None
            _curve_point(bench, model, meta, label, f"{kind} per-T", T, learned)
    for nfe in (8, 16):
        _flow_matching(bench, "steps", nfe)
    for nfe in HEUN_NFE:
        _flow_matching(bench, "steps", nfe, "heun")


def predictors(bench: Bench) -> None:
    budget_s = bench.model("NTM T=4")[1]["train_s"]
    label = "NTM T=4 transformer"
    for how, (model, meta) in (("same steps", bench.model(label)),
                               ("same time", _same_time(bench, label, budget_s))):
        name = f"{label} ({how})"
        bench.ntm("predictors", name, model, meta, bits=bench.bits(model, name))


def run(bench: Bench, parts: list[str]) -> list[dict]:
    """Run ``parts`` in the order of :data:`PARTS`; the rows."""
    runners = dict(main=main, guidance=guidance, warmstart=warmstart, steps=steps,
                   predictors=predictors)
    for part in PARTS:
        if part in parts:
            runners[part](bench)
    return bench.rows
