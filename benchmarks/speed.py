"""Speed benchmark: NTM throughput against zuko and flow matching.

All models are untrained (speed does not depend on the weights: no code path here stops early)
and float32. The NTM is the library default for vectors, ``NTM((D,), Schedule(T, t_min=0.05))``
(spline transporter, residual-MLP predictor of width 256 and depth 4, per-step spline bijector;
the bijectors' inverses take 2 sequential passes, ``ntmdist.defaults.vector_passes``); "paper"
is the same without the per-step bijector (the paper's sampler: T predictor steps in u-space and
one transporter inversion, 4 passes by default) and "paper, 2 passes" its transporter with 2.
zuko NSF and MAF have 5 transforms and two hidden layers whose width is chosen to match the
NTM's parameter count. Flow matching uses a ``Velocity`` with
the predictor's backbone (width 256, depth 4). Distribution value checks are off for every model
(zuko's import and ``torch.compile`` switch them off globally; this script does so explicitly).

Tables (rates are medians over repeats, after a warm-up call):

1. density: ``log_prob traj/s`` is trajectories (NTM) or examples (zuko) scored per second
   without gradients; ``train ex/s`` is examples per second of a training step (``model.loss``
   or the zuko NLL: forward, backward and an AdamW step); ``vs NSF`` divides the NTM's rate by
   zuko NSF's.
2. sampling: samples per second of ``model.sample(n)`` (default, ``denoise="learned"`` with an
   untrained ``Denoiser``, ``denoise="tweedie"``; "paper learned": T predictor steps and the
   denoiser once, no inversion at all), of flow matching Euler with 4, 16 and 64 steps, and of
   zuko; ``vs FM-64`` divides by the flow-matching rate with 64 steps. ``n`` (``--samples``)
   shrinks with D: zuko's autoregressive inverses take D sequential passes.
3. overhead (T = 4): ``log_prob`` of a batch of B trajectories against T separate predictor
   passes, T transporter forward passes and T per-step-bijector passes, each on a batch of B;
   the ratio (target <= 1.5) is the cost of ``log_prob`` over that sum.
4. compile (T = 4, D in ``--compile-dims``): ``torch.compile`` (inductor) against eager for
   ``model.loss`` (forward + backward) and ``dist.log_prob`` (no gradients); ``compile s`` is
   the first call (shorter when inductor's on-disk cache holds graphs of an earlier run); a
   failure is printed in the table.
5. memory: peak memory of one training step above the model and data, in a fresh process per
   row (method in ``benchmarks/_timing.py``: resident-set high-water mark on CPU,
   ``torch.cuda.max_memory_allocated`` on CUDA).
6. targets: issue 8's targets (NTM T = 4 sampling >= 8x flow matching with 64 Euler steps,
   ``log_prob`` overhead <= 1.5, NTM T = 4 training >= 0.5x zuko NSF), measured or not.

Usage::

    python benchmarks/speed.py                    # full, CPU, 1 thread: about 6 minutes
    python benchmarks/speed.py --quick            # small sizes, few repeats, no compile (smoke)
    python benchmarks/speed.py --no-compile --device cuda --threads 4
    python benchmarks/speed.py --print benchmarks/results/speed.json  # re-print saved tables

Writes ``benchmarks/results/speed.json``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from _results import read_results, write_results
from _timing import count, ntm, peak_memory, seconds, table, train_step, zuko_flow
from torch.distributions import Distribution

from ntmdist.distill import Denoiser
from ntmdist.flow_matching import Velocity
from ntmdist.flow_matching import sample as fm_sample
from ntmdist.transforms import call_and_ladj

HERE = Path(__file__).resolve().parent
Row = dict[str, object]


def ntm_density(d: int, t: int, x0: torch.Tensor, args: argparse.Namespace) -> Row:
    model = ntm(d, t, args.device)
    traj = model.schedule.sample(x0, 1)
    with torch.no_grad():
        lp = seconds(lambda: model().log_prob(traj), args.device, args.repeats)
    tr = seconds(train_step(model, lambda: model.loss(x0)), args.device, args.repeats)
    return dict(model=f"NTM T={t}", D=d, T=t, params=count(model), width=None,
                log_prob=args.batch / lp, train=args.batch / tr)


def zuko_density(kind: str, d: int, target: int, x0: torch.Tensor,
                 args: argparse.Namespace) -> Row:
    flow, width = zuko_flow(kind, d, target, args.device)
    with torch.no_grad():
        lp = seconds(lambda: flow().log_prob(x0), args.device, args.repeats)
    tr = seconds(train_step(flow, lambda: -flow().log_prob(x0).mean()), args.device,
                 args.repeats)
    return dict(model=f"zuko {kind}", D=d, T=None, params=count(flow), width=width,
                log_prob=args.batch / lp, train=args.batch / tr)


def density_rows(args: argparse.Namespace) -> list[Row]:
    rows = []
    for d in args.dims:
        x0 = torch.randn(args.batch, d, device=args.device)
        group = [ntm_density(d, t, x0, args) for t in args.steps]
        group += [zuko_density(kind, d, group[0]["params"], x0, args) for kind in ("NSF", "MAF")]
        nsf = group[-2]
        for r in group:
            r["log_prob_vs_nsf"] = r["log_prob"] / nsf["log_prob"]
            r["train_vs_nsf"] = r["train"] / nsf["train"]
        rows += group
    return rows


def samplers(d: int, args: argparse.Namespace) -> dict[str, Callable[[int], object]]:
    """Every sampler compared at dimension ``d``, each called with the number of samples."""
    fns: dict[str, Callable[[int], object]] = {}
    for t in args.steps:
        model, paper = ntm(d, t, args.device), ntm(d, t, args.device, step_flow=None)
        model.denoiser = Denoiser(d).to(args.device)
        paper.denoiser = Denoiser(d).to(args.device)
        fns[f"NTM T={t}"] = model.sample
        fns[f"NTM T={t} learned"] = partial(model.sample, denoise="learned")
        fns[f"NTM T={t} tweedie"] = partial(model.sample, denoise="tweedie")
        fns[f"NTM T={t} paper"] = paper.sample
        fns[f"NTM T={t} paper learned"] = partial(paper.sample, denoise="learned")
        fast = ntm(d, t, args.device, step_flow=None, passes=2)
        fns[f"NTM T={t} paper, 2 passes"] = fast.sample
    velocity = Velocity(d, width=256, depth=4).to(args.device)
    for steps in (4, 16, 64):
        fns[f"flow matching Euler {steps}"] = partial(fm_sample, velocity, steps=steps)
    target = count(ntm(d, args.steps[0], args.device))
    for kind in ("NSF", "MAF"):
        fns[f"zuko {kind}"] = partial(zuko_sample, zuko_flow(kind, d, target, args.device)[0])
    return fns


def zuko_sample(flow: torch.nn.Module, n: int) -> torch.Tensor:
    return flow().sample((n,))


def sampling_rows(args: argparse.Namespace) -> list[Row]:
    rows = []
    for i, d in enumerate(args.dims):
        n = args.samples[min(i, len(args.samples) - 1)]
        group = []
        for name, fn in samplers(d, args).items():
            with torch.no_grad():
                s = seconds(partial(fn, n), args.device, args.repeats, warmup=partial(fn, 2))
            group.append(dict(model=name, D=d, n=n, rate=n / s))
        fm64 = next(r["rate"] for r in group if r["model"].endswith("Euler 64"))
        for r in group:
            r["vs_fm64"] = r["rate"] / fm64
        rows += group
    return rows


def overhead_row(d: int, args: argparse.Namespace, t: int = 4) -> Row:
    """``log_prob`` at T = 4 against T separate passes of each network."""
    model = ntm(d, t, args.device)
    x = torch.randn(args.batch, d, device=args.device)
    traj, dist, p = model.schedule.sample(x, 1), model(), model.predictor
    times, s = (torch.full((args.batch,), v, device=args.device) for v in (0.5, 0.25))
    with torch.no_grad():
        h = p(x, times, s)[2]
        parts = {
            "log_prob": lambda: dist.log_prob(traj),
            "predictor": lambda: p(x, times, s),
            "transporter": lambda: call_and_ladj(model.transporter(s), x, 1),
            "step_flow": lambda: call_and_ladj(model.step_flow(h), x, 1),
        }
        ms = {k: 1e3 * seconds(fn, args.device, args.repeats) for k, fn in parts.items()}
    reference = t * (ms["predictor"] + ms["transporter"] + ms["step_flow"])
    return dict(D=d, T=t, batch=args.batch, **ms, reference=reference,
                ratio=ms["log_prob"] / reference)


def compiled_speed(fn: Callable[[], torch.Tensor], backward: bool,
                   args: argparse.Namespace) -> dict:
    """Eager against ``torch.compile`` for ``fn`` (and its backward), or the error."""
    torch._dynamo.reset()
    compiled = torch.compile(fn)

    def run(f: Callable[[], torch.Tensor]) -> None:
        with torch.enable_grad() if backward else torch.no_grad():
            out = f()
            if backward:
                out.backward()

    try:
        eager = seconds(partial(run, fn), args.device, args.repeats)
        start = time.perf_counter()
        run(compiled)
        first = time.perf_counter() - start
        fast = seconds(partial(run, compiled), args.device, args.repeats)
    except Exception as error:  # reported in the table, not raised
        return dict(error=f"{type(error).__name__}: {str(error).splitlines()[0][:80]}")
    return dict(eager_ms=1e3 * eager, compiled_ms=1e3 * fast, speedup=eager / fast,
                compile_s=first)


def compile_row(d: int, t: int, args: argparse.Namespace) -> Row:
    model = ntm(d, t, args.device)
    x0 = torch.randn(args.batch, d, device=args.device)
    traj, dist = model.schedule.sample(x0, 1), model()
    return dict(D=d, T=t, loss=compiled_speed(partial(model.loss, x0), True, args),
                log_prob=compiled_speed(partial(dist.log_prob, traj), False, args))


def memory_rows(args: argparse.Namespace) -> list[Row]:
    d, t, b = args.memory_point
    specs = [(d, t, batch) for batch in args.memory_batches]
    specs += [(d, steps, b) for steps in args.steps if steps != t]
    specs += [(dims, t, b) for dims in args.dims if dims != d]
    rows = []
    for features, steps, batch in specs:
        for kind in ("NTM", "NSF") if steps == t else ("NTM",):
            spec = dict(model=kind, features=features, steps=steps, batch=batch,
                        device=args.device, threads=args.threads)
            rows.append(peak_memory(spec))
    return rows


def targets(results: dict) -> str:
    """Issue 8's targets, at D = 64 where it was measured (else the largest D)."""
    dims = {r["D"] for r in results["density"]}
    d = 64 if 64 in dims else max(dims)

    def pick(rows: list[Row], name: str) -> Row:
        return next(r for r in rows if r["D"] == d and r["model"] == name)

    rows = [dict(target=f"{name} sampling >= 8x flow matching Euler 64 (D={d})",
                 value=pick(results["sampling"], name)["vs_fm64"], bound=8.0, above=True)
            for name in ("NTM T=4", "NTM T=4 paper", "NTM T=4 paper, 2 passes",
                         "NTM T=4 paper learned")]
    rows.append(dict(target="log_prob / T separate passes <= 1.5 (worst D)", bound=1.5,
                     value=max(r["ratio"] for r in results["overhead"]), above=False))
    rows.append(dict(target=f"NTM T=4 training >= 0.5x zuko NSF (D={d})", bound=0.5,
                     value=pick(results["density"], "NTM T=4")["train_vs_nsf"], above=True))
    for r in rows:
        r["met"] = "yes" if (r["value"] >= r["bound"]) == r["above"] else "no"
    return table("targets", rows, [("target", "target", ""), ("measured", "value", ".3g"),
                                    ("met", "met", "")])


def compile_table(rows: list[Row]) -> str:
    flat = []
    for r in rows:
        for name in ("loss", "log_prob"):
            c = r[name]
            flat.append(dict(D=r["D"], T=r["T"], fn=name, **c) if "error" not in c else
                        dict(D=r["D"], T=r["T"], fn=name, error=c["error"]))
    return table("torch.compile vs eager", flat, [
        ("D", "D", ""), ("T", "T", ""), ("function", "fn", ""), ("eager ms", "eager_ms", ".1f"),
        ("compiled ms", "compiled_ms", ".1f"), ("speedup", "speedup", ".2f"),
        ("compile s", "compile_s", ".0f"), ("error", "error", "")])


def report(results: dict) -> str:
    parts = [
        table("density and training", results["density"], [
            ("model", "model", ""), ("D", "D", ""), ("params", "params", ""),
            ("zuko width", "width", ""), ("log_prob traj/s", "log_prob", "rate"),
            ("vs NSF", "log_prob_vs_nsf", ".2f"), ("train ex/s", "train", "rate"),
            ("vs NSF", "train_vs_nsf", ".2f")]),
        table("sampling", results["sampling"], [
            ("model", "model", ""), ("D", "D", ""), ("n", "n", ""),
            ("samples/s", "rate", "rate"), ("vs FM-64", "vs_fm64", ".3g")]),
        table("log_prob overhead (T = 4)", results["overhead"], [
            ("D", "D", ""), ("batch", "batch", ""), ("log_prob ms", "log_prob", ".2f"),
            ("predictor ms", "predictor", ".2f"), ("transporter ms", "transporter", ".2f"),
            ("step flow ms", "step_flow", ".2f"), ("T x sum ms", "reference", ".2f"),
            ("ratio", "ratio", ".2f")]),
    ]
    if results.get("compile"):
        parts.append(compile_table(results["compile"]))
    if results.get("memory"):
        parts.append(table("peak memory of a training step", results["memory"], [
            ("model", "model", ""), ("D", "features", ""), ("T", "steps", ""),
            ("batch", "batch", ""), ("peak MB", "peak_mb", ".1f"), ("method", "method", "")]))
    parts.append(targets(results))
    return "\n\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 64, 256])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--batch", type=int, default=256, help="log_prob and training batch")
    parser.add_argument("--samples", type=int, nargs="+", default=[4096, 128, 16],
                        help="samples per sampling call, per entry of --dims")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="time torch.compile (default: on, off with --quick)")
    parser.add_argument("--compile-dims", type=int, nargs="+", default=[64])
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--memory-point", type=int, nargs=3, default=[64, 4, 1024],
                        metavar=("D", "T", "BATCH"), help="the point varied one axis at a time")
    parser.add_argument("--memory-batches", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "speed.json")
    parser.add_argument("--print", nargs="+", type=Path, metavar="JSON",
                        help="only re-print the tables of saved results")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.print:
        for path in args.print:
            print(report(read_results(path)["results"]), end="\n\n")
        return
    if args.quick:
        args.dims, args.steps, args.batch, args.repeats = [2, 16], [4], 64, 2
        args.samples, args.compile_dims = [256, 32], [2]
        args.memory_point, args.memory_batches = [16, 4, 256], [256]
    if args.compile is None:
        args.compile = not args.quick
    previous = torch.get_num_threads(), Distribution._validate_args
    torch.set_num_threads(args.threads)
    Distribution.set_default_validate_args(False)
    try:
        with torch.random.fork_rng():  # every network and input below is seeded
            torch.manual_seed(0)
            results = {"density": density_rows(args), "sampling": sampling_rows(args),
                       "overhead": [overhead_row(d, args) for d in args.dims]}
            if args.compile:
                results["compile"] = [compile_row(d, 4, args) for d in args.compile_dims]
            if args.memory:
                results["memory"] = memory_rows(args)
    finally:
        torch.set_num_threads(previous[0])
        Distribution.set_default_validate_args(previous[1])
    print(report(results), flush=True)
    print()
    write_results(args, results=results)


if __name__ == "__main__":
    main()
