"""Generate ``docs/benchmarks.md`` from the saved results in ``benchmarks/results/``.

Each benchmark script re-prints its tables from its JSON with ``--print`` and builds its parser
with ``build_parser()``; this script puts a header before each benchmark (what it measures), the
command that wrote each JSON file (the saved options that differ from the script's defaults,
:func:`_results.flags`) and the script's tables. Nothing is trained or sampled: only JSON is
read. ``tests/test_benchmarks_report.py`` checks that the page is current.

Adding a benchmark is one entry of ``BENCHMARKS``.

Usage::

    python benchmarks/report.py --out docs/benchmarks.md   # regenerate the page
    python benchmarks/report.py                            # print it
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import shlex
from dataclasses import dataclass
from pathlib import Path

from _results import flags, read_results, repo_path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


@dataclass(frozen=True)
class Benchmark:
    """A benchmark script ``benchmarks/{script}.py``, its results ``benchmarks/results/{glob}``
    and what a reader needs to know first; ``merged``: the files are parts of one run, printed
    together by one ``--print``."""

    script: str
    results: str
    title: str
    about: str
    merged: bool = False


BENCHMARKS = (
    Benchmark("toy2d", "toy2d_*.json", "2D toys", "Five 2D toys. The default NTM T=4 against the "
              "paper's configuration (no per-step bijector), Gaussian reverse steps (identity "
              "transporter), flow matching on the same backbone (Euler 4 and 64 steps), an NTM "
              "initialised from that flow-matching model, the NTM sampled with trajectory "
              "Tweedie denoising or a learned denoiser, the NTM trained on the "
              "importance-weighted bound, and zuko NSF, trained side by side on the same data "
              "stream, steps, batch and learning-rate schedule. NLL in nats per example: the "
              "IWAE bound with 256 particles for NTMs (an upper bound), exact for NSF. On "
              "support: the fraction of 10k samples on the checkerboard's squares. Energy "
              "distance of 10k samples to 10k held-out points."),
    Benchmark("digits", "digits*.json", "8x8 digits", "Class-conditional models on "
              "scikit-learn's 8x8 digits (1497 training and 300 held-out images): bits per "
              "dimension on the dequantised pixel scale (NTM: IWAE bound with 64 particles; zuko "
              "NSF/MAF: exact, at equal steps and at equal wall-clock); sample quality in the "
              "features of a small classifier, over several independent draws of samples "
              "(Frechet distance, KID, precision and recall against the training images and "
              "against the held-out images, and the fraction of samples classified as their "
              "label); classifier-free guidance; the NTM initialised from flow matching or "
              "sampled with denoisers; quality against the number of network evaluations (the "
              "NTM at T = 4, 8, 16 against flow matching Euler and Heun and the Gaussian chain; "
              "plotted by `--plot docs/digits_steps.png`); the transformer predictor against "
              "the U-Net. Results of separate processes (`--parts`) print merged, with a "
              "diagnosis written from the numbers. Results written before `--parts` judged one "
              "draw against the held-out images only.", merged=True),
    Benchmark("sbi", "sbi_*.json", "sbibm: amortised posterior estimation", "Neural "
              "posterior estimation on five sbibm tasks with 10,000 simulations: NTM T=4 (the "
              "library default with a context) against zuko NSF (5 transforms, hidden 64x64) "
              "under one protocol (standardised theta and x, 10% validation split, early "
              "stopping, the same optimiser and batch). C2ST of 5000 posterior samples against "
              "5000 reference samples for observations 1-3 (a reduced protocol: the issue's "
              "10,000 samples for observations 1-10 take about 5 CPU-hours here); 0.5 is "
              "indistinguishable. One file per task, run one after another on one thread."),
    Benchmark("passes", "passes.json", "Sequential passes of the vector bijectors",
              "The vector bijectors' inverses (run by sampling) take one network pass per group "
              "of features: bits/dim of the flattened digits (D = 64) against the sampling rate "
              "for 2, 4, 8 and 64 (fully autoregressive) groups, with and without the per-step "
              "bijector."),
    Benchmark("speed", "speed.json", "Speed", "Throughput of untrained float32 models on one "
              "CPU thread: trajectory log_prob and training steps against zuko NSF/MAF of equal "
              "parameter count, sampling against flow matching Euler on the same backbone, the "
              "cost of log_prob against T separate network passes, torch.compile, and peak "
              "training memory."),
    Benchmark("ablate", "ablate.jsonl", "Checkerboard ablations (every run)", "Every run of "
              "the checkerboard NTM (toy2d's \"NTM T=4\" row) with knobs, one JSON line each, in "
              "the order they ran; `--model nsf` rows are toy2d's zuko NSF. A run is `python "
              "benchmarks/ablate.py --tag TAG FLAGS`. [Ablations](ablations.md) groups them "
              "and says what they mean."),
    Benchmark("digits_ablate", "digits_ablate.jsonl", "Digits ablations (every run)",
              "Every run of the digits NTM (digits.py's \"NTM T=4\" row) with knobs, judged on "
              "1000 samples (100 per class) instead of digits.py's 5000. A run is `python "
              "benchmarks/digits_ablate.py --tag TAG FLAGS`. [Ablations](ablations.md) groups "
              "them and says what they mean."),
)

PREAMBLE = """# Benchmark results

Generated from `benchmarks/results/` by `python benchmarks/report.py --out docs/benchmarks.md`;
do not edit by hand (`tests/test_benchmarks_report.py` fails when this page is out of date).
Every benchmark runs its models side by side in one process on the same data, optimiser steps,
batch and learning-rate schedule, and writes JSON; its tables below are what the script prints
again with `--print`. Timings come from CPUs shared with other work unless a benchmark says
otherwise: compare the ratios within one table.
"""


def _printed(module: object, paths: list[Path]) -> str:
    """What ``module.main(["--print", *paths])`` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        module.main(["--print", *map(str, paths)])
    return out.getvalue().strip()


def section(bench: Benchmark) -> str:
    """The page's section of one benchmark: header, commands and tables."""
    module = importlib.import_module(bench.script)
    paths = sorted(RESULTS.glob(bench.results))
    if not paths:
        raise FileNotFoundError(f"no results {RESULTS / bench.results} for {bench.script}.py")
    script = f"benchmarks/{bench.script}.py"
    parts = [f"## {bench.title}: `{script}`", bench.about,
             f"Re-printed by `python {script} --print {repo_path(RESULTS / bench.results)}`."]
    for path in paths:
        saved = read_results(path)
        if isinstance(saved, dict):
            argv = flags(module.build_parser(), {**saved["config"], "out": str(path)})
            parts.append(f"Command: `{shlex.join(['python', script, *argv])}`")
        if not bench.merged:
            parts.append(_printed(module, [path]))
    if bench.merged:
        parts.append(_printed(module, paths))
    return "\n\n".join(parts)


def render() -> str:
    """The whole page."""
    return "\n\n".join([PREAMBLE.strip(), *map(section, BENCHMARKS)]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    args = parser.parse_args(argv)
    page = render()
    if args.out is None:
        print(page, end="")
    else:
        args.out.write_text(page)


if __name__ == "__main__":
    main()
