"""8x8 digits benchmark: NTM vs the Gaussian chain vs flow matching vs zuko NSF/MAF, sample quality
the way the field measures it, the step-count curve, and the transformer predictor.

Class-conditional models on scikit-learn's bundled digits (1797 images, no download; the split,
the dequantisation and the classifier that judges samples: ``benchmarks/_digits_data.py``). All
are trained by ``ntmdist.training.fit`` on the same batches (same ``--seed``), with the same
optimiser steps, batch size and learning-rate schedule (AdamW, 5% warm-up, cosine decay, EMA
0.999; peak lr ``--lr``):

- "NTM T=4": ``nd.NTM((1, 8, 8), Schedule(4, t_min=(0, 0.05)), classes=10)`` with the default
  image networks sized for a CPU: two TarFlow causal-transformer blocks over 2x2 patches
  (``transporter_options=dict(width=64, depth=2)``) and the FiLM U-Net predictor (width 32).
  "NTM T=8" / "T=16": the same on 8 / 16 steps. "NTM multi-T": the same trained on T in
  {4, 8, 16} (``train_steps=(4, 8, 16)``: each step draws one), as the paper does.
- "Gaussian ...": the same predictor, ``transporter=None`` (Gaussian reverse steps).
- "flow matching": ``Velocity`` with a U-Net backbone of the same width (32), label dropout 0.1,
  sampled with Euler or Heun steps (classifier-free guidance :math:`v_c + w (v_c - v_u)`).
- "zuko NSF" / "zuko MAF": ``zuko.flows.NSF`` / ``MAF`` on the flattened 64 pixels, 5
  transforms, hidden (256, 256), a one-hot class as context; exact log-likelihood. Each is trained
  for the same optimiser steps ("same steps") and for the NTM T=4's training wall-clock ("same
  time": its seconds per step measured first). No null label, so no guidance.
- "NTM T=4 transformer": the NTM T=4 with ``ntmdist.dit.TransformerPredictor`` (patch 2, width
  64, depth 5, 4 heads: 401k parameters against the U-Net's 411k), for the same steps and for
  the U-Net NTM's training wall-clock.
- Learned denoisers: a ``Denoiser`` (width 128) per NTM, trained ``--denoiser-steps`` (default
  ``--steps``) by ``fit_denoiser``; the multi-T NTM's one denoiser serves every T.

Parts (``--parts``, all by default), each an independent piece of one run; two processes may run
different parts at once. Trained models are saved under ``--cache`` (``benchmarks/cache/digits/``,
gitignored; ``benchmarks/_digits_cache.py``) and shared: a part that needs another's model loads
it, or waits while another process trains it. Samples are drawn with generators seeded by the
row's name, so a row is the same whichever parts run. See ``benchmarks/_digits_parts.py``.

- ``main``: NTM T=4, Gaussian T=4, flow matching Euler 4 and 64, zuko NSF/MAF (no guidance).
- ``guidance``: NTM, Gaussian and flow matching Euler 4 / 64 at guidance w = 1 and 3.
- ``warmstart``: ``NTM.from_flow_matching`` fine-tuned ``--fm-steps`` (default ``--steps``)
  with the mean alignment (weight 2.5, the velocity held for the first tenth), against the NTM
  trained from scratch as long (the "NTM T=4" row, or "NTM T=4 scratch N" when N differs); the
  NTM T=4 sampled with ``denoise="tweedie"`` and with its learned denoiser.
- ``steps``: the step-count curve (the paper reports FID at T = 4 / 8 / 16): the multi-T NTM and
  Gaussian chain at T = 4, 8, 16, the NTM with and without its learned denoiser; with
  ``--per-T`` (default 8 16) separate NTMs (with denoisers) and Gaussian chains for T = 8, 16;
  flow matching Euler at 8 and 16 steps and Heun at 4, 8, 16 and 64 evaluations.
- ``predictors``: the transformer predictor against the U-Net (NTM T=4).

Sample quality (``benchmarks/_digits_quality.py``): every sampled row is ``--draws``
independent draws of ``--per-class`` samples of each class; each draw is judged in the
classifier's 64 features against the 1497 training images (the field's reference) and the 300
held-out images (memorisation shows there): Frechet distance, KID (x 1000, with its standard
error over 10 disjoint subsets; on the features divided by their root mean square, see there),
precision and recall (k = 3), and the classifier's accuracy on the samples' labels. Tables
show mean ± sd over draws. Reference rows give each metric's floor: the held-out images as
samples, the training images as samples, and a held-out-sized subset of the training images
against the rest.

Columns: params (of the denoiser alone in "learned" rows); steps / train s: optimiser steps and
training wall-clock; bits/dim: held-out bits per dimension on the dequantised pixel scale (NTM
and Gaussian: IWAE bound with ``--particles`` particles on ``--bits-points`` images, an upper
bound; NSF/MAF exact; "vs NSF" divides by "zuko NSF (same time)"); NFE: network evaluations
(predictor or velocity, +1 for the learned denoiser; transporter inversions marked
separately); sample s/1000: wall-clock seconds per 1000 samples; "vs FM-64": ratio to flow
matching Euler 64 without guidance. ``--print`` ends with a diagnosis written from the numbers
(``benchmarks/_digits_curve.py``): whether the NTM's gap to Euler 64 is fidelity (precision) or
diversity (recall), where it closes, and the issue's targets, met or not.

Cost, from short timings on one thread of a 2-core machine shared with other jobs (full runs
have taken 1.4-1.7x these), in seconds per optimiser step of batch 64: NTM T=4 / 8 / 16 0.21 /
0.40 / 0.82 (multi-T 0.37), Gaussian 0.09 / 0.19 / 0.37 (multi-T 0.18), flow matching 0.037,
NSF 0.050, MAF 0.011, transformer NTM 0.22, FM-initialised NTM 0.26, denoiser 0.15 / 0.34 /
0.67 on an NTM T=4 / 8 / 16 (the multi-T NTM's trains on T=4 trajectories); per 1000 samples:
NTM T=4 0.94 s (T=16 2.1, guided 1.6, tweedie 3.8, learned denoiser 0.49), Gaussian 0.48
(T=16 2.0), flow matching 0.12 per evaluation (Euler 64 7.8, guided twice that), NSF 11, MAF
0.95; judging a draw of 5000 samples 1.7 s; the IWAE bound with 64 particles 0.08 s per
held-out image at T=4 (0.38 at T=16). Estimated CPU time of each part at the defaults (these
timings x 1.6): main 37 min, guidance 16 min, warmstart 14 min, steps 2.1 h (39 min with
``--no-per-T``), predictors 14 min; 3.4 h in all. The former protocol (main, guidance and
warm start, one draw of 5000 samples per row) ran in 2849 s. ``--quick`` takes about 6 min.

Usage::

    python benchmarks/digits.py                  # everything in one process
    python benchmarks/digits.py --parts main guidance warmstart predictors  # two processes at
    python benchmarks/digits.py --parts steps                               # once (1.4 h, 2.1 h)
    python benchmarks/digits.py --quick          # 40 steps, 2 draws of 200 samples (smoke run)
    python benchmarks/digits.py --device cuda --steps 10000 --batch-size 256
    python benchmarks/digits.py --print benchmarks/results/digits_*.json  # merge and re-print
    python benchmarks/digits.py --print benchmarks/results/digits_*.json \
        --plot docs/digits_steps.png

Writes ``benchmarks/results/digits.json`` (all parts) or ``digits_<parts>.json`` and prints
markdown tables.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _digits_data
import torch
from _digits_bench import Bench
from _digits_cache import ModelCache
from _digits_curve import curve_table, diagnosis, plot
from _digits_data import CACHE, load_classifier, split
from _digits_parts import MULTI_T, PARTS, run
from _digits_quality import Quality
from _digits_tables import held_out, merge, quality_ref, tables
from _results import read_results, write_results

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "digits.json"


def report(saved: dict) -> str:
    """Every table of saved (or merged) results, and the diagnosis (not for results written
    before --parts, which have no curve)."""
    rows = saved["results"]
    lines = tables(saved) + curve_table(rows, quality_ref(rows)) + held_out(saved)
    if "parts" in saved:
        lines += diagnosis(rows)
    return "\n".join(lines)


def print_tables(paths: list[Path], plot_path: Path | None = None) -> None:
    """Re-print saved results (``--print``): results written before --parts one file at a time,
    the others merged into one set of tables; plot the merged curve with ``--plot``."""
    saved = [read_results(p) for p in paths]
    current = [s for s in saved if "parts" in s]
    merged = [s for s in saved if "parts" not in s] + ([merge(current)] if current else [])
    for results in merged:
        print(report(results))
        runs = results.get("runs", [results])
        per_run = ", ".join(f"{'+'.join(r['parts'])} {r['total_s']:.0f} s" for r in runs
                            if "parts" in r)
        print(f"\ntotal {results['total_s']:.0f} s" + (f" ({per_run})" if per_run else ""),
              end="\n\n")
    if plot_path is not None:
        plot(merged[-1]["results"], plot_path)
        print(f"wrote {plot_path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                        help="the pieces to run (module docstring)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 40 steps, 2 draws of 20 samples per class, 8 "
                             "particles")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak lr of every model")
    parser.add_argument("--shift", type=float, default=0.0, help="grid shift m of the NTMs")
    parser.add_argument("--particles", type=int, default=64, help="IWAE particles")
    parser.add_argument("--bits-points", type=int, default=300,
                        help="held-out images for the IWAE bound")
    parser.add_argument("--per-class", type=int, default=500, help="samples per class and draw")
    parser.add_argument("--draws", type=int, default=3,
                        help="independent draws of samples per row (the spread)")
    parser.add_argument("--per-T", nargs="*", type=int, choices=MULTI_T[1:],
                        default=list(MULTI_T[1:]), metavar="T",
                        help="steps: also train separate NTMs and Gaussian chains for these T "
                             "(default 8 16; none when given no value)")
    parser.add_argument("--no-per-T", dest="per_T", action="store_const", const=[],
                        help="steps: no separate models (the same as --per-T with no value)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--fm-steps", type=int, default=None,
                        help="fine-tuning steps N of the FM-initialised NTM (default: --steps; "
                             "otherwise an NTM is also trained from scratch for N steps)")
    parser.add_argument("--denoiser-steps", type=int, default=None,
                        help="steps of the learned denoisers (default: --steps)")
    parser.add_argument("--classifier", type=Path, default=CACHE)
    parser.add_argument("--cache", type=Path, default=HERE / "cache" / "digits",
                        help="folder of the trained models shared between parts and processes")
    parser.add_argument("--out", type=Path, default=OUT,
                        help="results (default: digits.json for all parts, else "
                             "digits_<parts>.json next to it)")
    parser.add_argument("--print", nargs="+", type=Path, metavar="JSON",
                        help="only re-print saved results (several files: merged)")
    parser.add_argument("--plot", type=Path, metavar="PNG",
                        help="with --print: also plot the step-count curve")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plot is not None and not args.print:
        parser.error("--plot draws saved results: give them with --print")
    if args.print:
        return print_tables(args.print, args.plot)
    if args.quick:
        args.steps, args.particles, args.bits_points, args.per_class = 40, 8, 50, 20
        args.draws = min(args.draws, 2)
    args.parts = [p for p in PARTS if p in args.parts]
    if args.out == OUT and args.parts != list(PARTS):
        args.out = OUT.with_name(f"digits_{'_'.join(args.parts)}.json")
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        begin = time.perf_counter()
        data = split()
        net, accuracy, fresh = load_classifier(data, args.classifier)
        quality = Quality(net, data)
        references = quality.references(args.draws, args.seed)
        classifier = dict(accuracy=accuracy, trained_now=fresh, path=str(args.classifier),
                          recipe=_digits_data.CLASSIFIER_RECIPE)
        rows = run(Bench(args, data, quality, ModelCache(args.cache), args.draws), args.parts)
        total = time.perf_counter() - begin
        saved = dict(config=vars(args), classifier=classifier, references=references,
                     parts=args.parts, total_s=total, results=rows)
        print(report(saved), flush=True)
        print(f"\ntotal {total:.0f} s")
    finally:
        torch.set_num_threads(previous)
    write_results(args, **{k: v for k, v in saved.items() if k != "config"})


if __name__ == "__main__":
    main()
