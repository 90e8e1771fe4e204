"""The demo behind ``make demo``: ``ntmdist fit checkerboard``, written to ``runs/demo``.

Trains a 4-step NTM on the checkerboard and, side by side with the same optimiser steps, the
same chain with Gaussian reverse steps (the paper's "Gaussian bottleneck"), then evaluates both
on held-out points (IWAE NLL bound, energy distance, fraction of samples on the board) and
prints the table. Writes ``runs/demo/samples.png`` (data | NTM T=4 | Gaussian T=4, and a strip
of sampled trajectories level by level), ``runs/demo/metrics.json`` and the two checkpoints.

The demo uses a smaller predictor than the library default (width 128, depth 3; the
transporter's networks 64 wide) with the other defaults of ``ntmdist fit`` (per-step spline
bijector, ``t_min ~ U[0, 0.05]``, grid shift 1, learning rate 2e-3), and 2000 steps of batch
512, so that both trainings finish in under 5 minutes on 2 CPU cores; the table's header says
so. It runs on one thread: on a shared 2-core machine a
second thread made a step at best about 15% faster, and up to 20 times slower when the other
core was busy.

    python examples/demo.py                 # the same as `make demo`
    python examples/demo.py --steps 4000    # any `ntmdist fit` option overrides the defaults
    python examples/demo.py --figure docs/samples.png   # also the README's picture
"""

import argparse
import shutil
import sys
import time
from pathlib import Path

from ntmdist.cli import main

OUT = Path(__file__).resolve().parents[1] / "runs" / "demo"
DEFAULTS = ["--steps", "2000", "--lr", "2e-3", "--width", "128", "--depth", "3",
            "--transporter-width", "64", "--threads", "1"]

if __name__ == "__main__":
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--figure", type=Path, help="copy samples.png there (the README's)")
    args, rest = parser.parse_known_args(sys.argv[1:])
    begin = time.perf_counter()
    main(["fit", "checkerboard", "--out", str(OUT), *DEFAULTS, *rest])
    if args.figure is not None:
        shutil.copyfile(OUT / "samples.png", args.figure)
    print(f"demo finished in {time.perf_counter() - begin:.0f} s: see {OUT / 'samples.png'} "
          f"and {OUT / 'metrics.json'}")
